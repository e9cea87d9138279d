"""Fixtures for the integration tests; the helpers are in integ_util.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from integ_util import VENV_BIN, Proc, base_env, microdet, wait_http, wait_log


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with a SQLite store in tmp; yields its URL.

    The server picks its own port (``--port 0``) and the URL is read from its log ("Uvicorn running
    on http://127.0.0.1:<port>"): no port is chosen here and released for someone else to take."""
    store = tmp_path / "server"
    store.mkdir()
    env = base_env(tmp_path)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    proc = Proc([str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", "0",
                 "--workers", "1", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
                 "--default-artifact-root", str(store / "artifacts")],
                tmp_path / "mlflow-server.log", env)
    try:
        port = int(wait_log(proc.log, r"running on http://127\.0\.0\.1:(\d+)", 180, proc.p).group(1))
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", 180, proc.p, proc.log)
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def detector_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("detcache")
    cfg = microdet.micro_config(root)
    microdet.build_micro_detector(cfg)
    return Path(cfg.paths.models) / "stage2"
