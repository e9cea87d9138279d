"""Shared test fixtures: the repo root, the real shared data, and a `micro` config rooted in tmp."""

from __future__ import annotations

from pathlib import Path

import pytest
from testutil import REPO, SHARED, micro_config

from chintox.config import Config


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the real data sets are expected at {SHARED} (CI has them)")
    return SHARED


@pytest.fixture
def micro_cfg(tmp_path: Path) -> Config:
    return micro_config(tmp_path)


@pytest.fixture(autouse=True)
def _isolated_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test inherits a tracking server or a parent run from the shell or from an earlier test:
    ``MLFLOW_TRACKING_URI`` wins over params, so one leak sends later tests' runs elsewhere."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CHINTOX_PARENT_RUN_ID", raising=False)
