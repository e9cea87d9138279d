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
