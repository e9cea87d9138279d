"""Fixtures for the registry tests: a micro config rooted in tmp, a micro detector, fast versions."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import microdet

micro_config = microdet.micro_config


@pytest.fixture(scope="session")
def detector_cache(tmp_path_factory) -> Path:
    """One micro detector built per session; tests copy it (a copy takes milliseconds)."""
    root = tmp_path_factory.mktemp("detcache")
    cfg = micro_config(root)
    microdet.build_micro_detector(cfg)
    return Path(cfg.paths.models) / "stage2"


@pytest.fixture(autouse=True)
def _fast_mlflow(monkeypatch):
    monkeypatch.setenv("CHINTOX_MLFLOW_BACKOFF_S", "0.2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CHINTOX_PARENT_RUN_ID", raising=False)
    if "MLFLOW_ENABLE_UV_AUTO_DETECT" not in os.environ:  # a user's own setting wins; restored after
        monkeypatch.setenv("MLFLOW_ENABLE_UV_AUTO_DETECT", "false")


@pytest.fixture
def reg_cfg(tmp_path, detector_cache):
    """A micro config in tmp with a detector folder, metrics.json and evaluation-set files."""
    cfg = micro_config(tmp_path)
    microdet.build_micro_detector(cfg, cache=detector_cache)
    microdet.write_metrics(cfg)
    microdet.write_eval_sets(cfg)
    return cfg


from reg_util import make_version  # noqa: F401
