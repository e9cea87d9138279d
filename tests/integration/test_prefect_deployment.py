"""A real local Prefect server and process worker run the deployments of prefect.yaml on the micro
profile; the registry then holds the new version, promotion works, and `detect` answers with it."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import microdet
import pytest
from integ_util import REPO, VENV_BIN, Proc, base_env, free_port, wait_http
from testutil import micro_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_TIMEOUT_S = float(os.environ.get("CHINTOX_FLOW_TIMEOUT_S", "900"))
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _api(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


class PrefectStack:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME and SQLite db, the work pool,
    the deployments of prefect.yaml (deployed with the CLI) and a process worker."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        home = tmp / "prefect_home"
        home.mkdir()
        self.env = base_env(tmp)
        self.env.update({
            "PREFECT_HOME": str(home),
            # results (the task cache) default to ~/.prefect/storage whatever PREFECT_HOME says
            "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PWD": str(REPO),  # prefect.yaml's */local deployments run the code of this checkout
        })
        self.procs: list[Proc] = []

    def start(self) -> None:
        server_env = {k: v for k, v in self.env.items() if k != "PREFECT_API_URL"}
        self.server = Proc([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                            "--port", str(self.port)], self.tmp / "prefect-server.log", server_env)
        self.procs.append(self.server)
        wait_http(f"{self.api}/health", 240, self.server.p, self.server.log)
        self.cli("work-pool", "create", "chintox-cpu", "--type", "process")

    def cli(self, *args: str, timeout: float = 300) -> str:
        r = subprocess.run([str(VENV_BIN / "prefect"), *args], cwd=REPO, env=self.env, capture_output=True,
                           text=True, timeout=timeout, check=False)
        assert r.returncode == 0, f"prefect {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r.stdout

    def deploy(self, name: str) -> None:
        self.cli("--no-prompt", "deploy", "--prefect-file", str(REPO / "prefect.yaml"), "--name", name)

    def start_worker(self) -> None:
        w = Proc([str(VENV_BIN / "prefect"), "worker", "start", "--pool", "chintox-cpu", "--type", "process",
                  "--limit", "1"], self.tmp / "prefect-worker.log", self.env)
        self.procs.append(w)
        self.worker = w

    def run(self, flow: str, deployment: str, parameters: dict) -> dict:
        dep = _api(f"{self.api}/deployments/name/{flow}/{deployment}")
        fr = _api(f"{self.api}/deployments/{dep['id']}/create_flow_run", "POST", {"parameters": parameters})
        t0 = time.time()
        while time.time() - t0 < RUN_TIMEOUT_S:
            state = _api(f"{self.api}/flow_runs/{fr['id']}")["state"]
            if state["type"] in TERMINAL:
                return {"id": fr["id"], "state": state, "seconds": round(time.time() - t0, 1)}
            if self.worker.p.poll() is not None:
                break
            time.sleep(3)
        raise AssertionError(f"flow run {fr['id']} of {flow}/{deployment} not finished after "
                             f"{time.time() - t0:.0f} s; worker log:\n{self.worker.log.read_text()[-5000:]}")

    def logs(self, flow_run_id: str) -> str:
        rows = _api(f"{self.api}/logs/filter", "POST",
                    {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
        return "\n".join(r["message"] for r in rows)[-6000:]

    def task_states(self, flow_run_id: str) -> dict[str, str]:
        """``{task name: state name}`` of a flow run's task runs (name without the run suffix)."""
        rows = _api(f"{self.api}/task_runs/filter", "POST",
                    {"flow_runs": {"id": {"any_": [flow_run_id]}}})
        return {r["name"].rsplit("-", 1)[0]: r["state"]["name"] for r in rows}

    def artifacts(self, flow_run_id: str) -> list[dict]:
        return _api(f"{self.api}/artifacts/filter", "POST",
                    {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture
def prefect_stack(tmp_path):
    stack = PrefectStack(tmp_path)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def _overrides(root: Path) -> dict:
    return micro_overrides(root)


def _assert_completed(stack: PrefectStack, run: dict) -> None:
    assert run["state"]["type"] == "COMPLETED", (
        f"{run['state']['type']}: {run['state'].get('message')}\n--- flow logs\n{stack.logs(run['id'])}\n"
        f"--- worker log\n{stack.worker.log.read_text()[-4000:]}")


def _detect_cli(stack: PrefectStack, root: Path, text: str) -> dict:
    sets = [x for k, v in _overrides(root).items() for x in ("--set", f"{k}={v}")]
    r = subprocess.run([str(VENV_BIN / "chintox"), "detect", text, "--profile", "micro", *sets], cwd=REPO,
                       env=stack.env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads([x for x in r.stdout.splitlines() if x.startswith("{")][-1])


def _train_steps_available() -> str | None:
    try:
        import tasks.evaluate
        import tasks.split
        import tasks.train
        import tasks.validate  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return None


def test_train_detector_deployment_end_to_end(prefect_stack, tmp_path, shared_datasets):
    """train-detector/local on the micro profile -> version with tags -> promote -> detect."""
    missing = _train_steps_available()
    if missing:
        pytest.skip(f"training steps not importable yet ({missing}); "
                    "test_promote_deployment_and_detect covers the deployment path meanwhile")
    from mlflow import MlflowClient

    from chintox.tracking import setup

    root = tmp_path / "run"
    params_mtime = (REPO / "params.yaml").stat().st_mtime_ns
    prefect_stack.deploy("train-detector/local")
    prefect_stack.deploy("promote-detector/local")
    prefect_stack.start_worker()
    overrides = _overrides(root)
    params = {"profile": "micro", "overrides": overrides, "backend": "hf"}
    run = prefect_stack.run("train-detector", "local", params)
    print(f"train-detector: {run['state']['type']} in {run['seconds']} s")
    _assert_completed(prefect_stack, run)
    keys = {a["key"] for a in prefect_stack.artifacts(run["id"])}
    assert {"train-detector-metrics", "train-detector-registration"} <= keys

    cfg = microdet.micro_config(root)
    setup(cfg)
    c = MlflowClient()
    name = cfg.mlflow.registered_model
    mv = c.get_model_version_by_alias(name, "challenger")
    for tag in ("git_commit", "profile", "detector_sha256", "eval_sets"):
        assert mv.tags.get(tag), tag
    assert mv.tags["profile"] == "micro"
    assert any(k.startswith(("dvc.", "data.")) for k in mv.tags)
    assert any(k.startswith("metrics.toxicn_test") for k in mv.tags)
    # nested runs under the flow's parent run
    reg_run = c.get_run(mv.run_id)
    parent_id = reg_run.data.tags.get("mlflow.parentRunId")
    assert parent_id and c.get_run(parent_id).data.tags.get("pipeline") == "train-detector"

    prom = prefect_stack.run("promote-detector", "local", {"profile": "micro", "overrides": overrides})
    _assert_completed(prefect_stack, prom)
    assert str(c.get_model_version_by_alias(name, "champion").version) == str(mv.version)
    out = _detect_cli(prefect_stack, root, "你好")
    assert out["model_version"] == str(mv.version) and out["label"] in (0, 1)

    # a re-run reuses the cached training (no retraining) and registers nothing new
    run2 = prefect_stack.run("train-detector", "local", params)
    _assert_completed(prefect_stack, run2)
    print(f"train-detector re-run: {run2['seconds']} s")
    if (REPO / "params.yaml").stat().st_mtime_ns == params_mtime:
        states = prefect_stack.task_states(run2["id"])
        for step in ("stage1", "stage2", "evaluate"):
            assert states.get(step) == "Cached", states
        assert states.get("register") == "Completed", states
        assert str(c.get_model_version_by_alias(name, "champion").version) == str(mv.version)
    else:  # someone edited params.yaml meanwhile: a new cache key is right, nothing to check
        print("params.yaml changed during the test: cache check skipped")


def test_promote_deployment_and_detect(prefect_stack, tmp_path, detector_cache):
    """promote-detector/local moves champion to a registered micro detector; `detect` answers."""
    from tasks.register import run_register

    root = tmp_path / "run"
    cfg = microdet.micro_config(root)
    microdet.build_micro_detector(cfg, cache=detector_cache)
    microdet.write_metrics(cfg)
    microdet.write_eval_sets(cfg)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    version = run_register(cfg)["version"]
    prefect_stack.deploy("promote-detector/local")
    prefect_stack.start_worker()
    run = prefect_stack.run("promote-detector", "local", {"profile": "micro", "overrides": _overrides(root)})
    print(f"promote-detector: {run['state']['type']} in {run['seconds']} s")
    _assert_completed(prefect_stack, run)
    assert "promote-detector-decision" in {a["key"] for a in prefect_stack.artifacts(run["id"])}
    out = _detect_cli(prefect_stack, root, "你好")
    assert out["model_version"] == version
