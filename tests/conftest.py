"""Shared test fixtures: the repo root, the real shared data, and a `micro` config rooted in tmp."""

from __future__ import annotations

import os
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


# Environment variables through which MLflow (and the flows) pick a store, an experiment or a parent run.
# mlflow.set_tracking_uri / set_experiment / set_registry_uri *write* MLFLOW_TRACKING_URI,
# MLFLOW_EXPERIMENT_ID and MLFLOW_REGISTRY_URI into os.environ (for subprocesses), so a test that
# never touched them itself still leaves them behind.
_TRACKING_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
                 "MLFLOW_RUN_ID", "CHINTOX_PARENT_RUN_ID")


def reset_mlflow_state() -> None:
    """Forget MLflow's process-wide state: the tracking and registry URIs, the active experiment and
    any active run (dropped, not ended: its store may be a server this test has stopped)."""
    import sys

    if "mlflow" not in sys.modules:  # never imported: nothing to reset (and no import cost)
        return
    import mlflow
    from mlflow.tracking import fluent

    fluent._active_run_stack.set([])
    fluent._last_active_run_id.set(None)
    fluent._active_experiment_id = None
    mlflow.set_tracking_uri(None)  # None: back to "unset" (also unsets MLFLOW_TRACKING_URI)
    mlflow.set_registry_uri(None)


@pytest.fixture(autouse=True)
def _isolated_tracking_env(monkeypatch: pytest.MonkeyPatch):
    """No test inherits a tracking store, an experiment or a parent run from the shell or from an
    earlier test, and none leaves one behind: ``MLFLOW_TRACKING_URI`` wins over params, so one leak
    sends later tests' runs elsewhere, and MLflow's module globals (tracking URI, active experiment,
    active run) outlive the environment variables."""
    for var in _TRACKING_ENV:
        monkeypatch.delenv(var, raising=False)
    reset_mlflow_state()
    yield
    reset_mlflow_state()
    for var in _TRACKING_ENV:  # set by mlflow itself during the test (monkeypatch restores the shell's)
        os.environ.pop(var, None)
