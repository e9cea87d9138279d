"""MLflow unreachable: the flow fails after retries with an error naming the tracking URI, the
detector and metrics stay on disk, and a re-run with the store back registers without retraining."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import microdet
import pytest
from integ_util import REPO, base_env, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_RUN = r"""
import json, sys
from flows.evaluate_detector import evaluate_detector
out = evaluate_detector(profile="micro", overrides=json.loads(sys.argv[1]), evaluate=False, register_model=True)
print("RESULT " + json.dumps(out["registered"]))
"""


def test_flow_fails_clearly_then_rerun_registers(tmp_path, detector_cache):
    root = tmp_path / "run"
    cfg = microdet.micro_config(root)
    detector = microdet.build_micro_detector(cfg, cache=detector_cache)
    microdet.write_metrics(cfg)
    microdet.write_eval_sets(cfg)
    overrides = {
        "data.out_dir": cfg.data.out_dir, "paths.models": cfg.paths.models, "paths.reports": cfg.paths.reports,
        "paths.checkpoints": cfg.paths.checkpoints, "mlflow.tracking_uri": cfg.mlflow.tracking_uri,
        "mlflow.artifact_root": cfg.mlflow.artifact_root, "model.prompt_file": cfg.model.prompt_file,
    }
    env = base_env(tmp_path)
    env.update({"PREFECT_HOME": str(tmp_path / "prefect_home"),
                "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "prefect_home" / "storage"),
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "CHINTOX_MLFLOW_ATTEMPTS": "2", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    down = dict(env, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    before = sorted((p.relative_to(detector), p.stat().st_size) for p in detector.rglob("*") if p.is_file())

    r = subprocess.run([sys.executable, "-c", _RUN, json.dumps(overrides)], cwd=REPO, env=down,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode != 0
    assert "RegistryUnavailableError" in r.stderr and down["MLFLOW_TRACKING_URI"] in r.stderr, r.stderr[-4000:]
    assert "could not be reached after 2 attempts" in r.stderr
    after = sorted((p.relative_to(detector), p.stat().st_size) for p in detector.rglob("*") if p.is_file())
    assert after == before and (Path(cfg.paths.reports) / "metrics.json").is_file()

    r = subprocess.run([sys.executable, "-c", _RUN, json.dumps(overrides)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-4000:]
    reg = json.loads([x for x in r.stdout.splitlines() if x.startswith("RESULT ")][-1][7:])
    assert reg["version"] == "1" and reg["aliases"] == ["challenger"]
