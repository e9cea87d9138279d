"""Shared test fixtures: the repo root, the real shared data, and a `micro` config rooted in tmp."""

from __future__ import annotations

from pathlib import Path

import pytest

from chintox.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared" / "datasets").resolve()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the real data sets are expected at {SHARED} (CI has them)")
    return SHARED


def micro_config(root: Path, **overrides) -> Config:
    """The `micro` profile with every output under ``root``; extra dotted overrides allowed."""
    base = {
        "data.out_dir": str(root / "data"),
        "paths.models": str(root / "models"),
        "paths.reports": str(root / "reports"),
        "paths.checkpoints": str(root / "checkpoints"),
        "mlflow.tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        "mlflow.artifact_root": str(root / "mlruns" / "artifacts"),
        "model.prompt_file": str(REPO / "prompts" / "toxicity_zh.txt"),
    }
    base.update(overrides)
    return load_config(REPO / "params.yaml", profile="micro", overrides=base)


@pytest.fixture
def micro_cfg(tmp_path: Path) -> Config:
    return micro_config(tmp_path)
