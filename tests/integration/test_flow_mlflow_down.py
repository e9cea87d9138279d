"""MLflow unreachable: train-detector fails fast, after its retries, with an error naming the tracking URI,
before DVC runs anything (no experiment, no output, the checkout untouched). That a re-run after such a
failure retrains nothing is shown by the deployment test (its second run restores every stage from DVC)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from integ_util import base_env, clone_worktree, refused_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_RUN = r"""
import json, sys
from flows.train_detector import train_detector
train_detector(profile="micro", overrides=json.loads(sys.argv[1]))
"""


def test_train_flow_fails_clearly_before_any_work_when_mlflow_is_down(tmp_path):
    repo = clone_worktree(tmp_path)
    env = base_env(tmp_path)
    env.update({"PREFECT_HOME": str(tmp_path / "prefect_home"),
                "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "prefect_home" / "storage"),
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "CHINTOX_MLFLOW_ATTEMPTS": "2", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    with refused_port() as port:  # held by this process, never listening: refused for the whole run
        uri = f"http://127.0.0.1:{port}"
        r = subprocess.run([sys.executable, "-c", _RUN, json.dumps({"mlflow.tracking_uri": uri})], cwd=repo,
                           env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode != 0, r.stdout[-3000:]
    assert "RegistryUnavailableError" in r.stderr and uri in r.stderr, r.stderr[-4000:]
    assert "could not be reached after 2 attempts" in r.stderr
    # nothing ran: no DVC experiment, no outputs, the checkout as it was
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True,
                                    check=True).stdout
    assert git("for-each-ref", "refs/exps") == ""
    assert git("status", "--porcelain", "--untracked-files=no") == ""
    assert not (repo / "models").exists() and not (repo / "data" / "splits").exists()
