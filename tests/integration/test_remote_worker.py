"""The `*/remote` deployments, rehearsed: a second machine's worker, the shared stack, faults.

Played here on one machine, each "machine" with nothing of the others but the network:

- **the stack** (``chintox.services``): PostgreSQL, the MLflow server on it with proxied artifacts, the
  Prefect server on it, and sshd hosting the DVC remote; plus a bare git repository served by
  ``git daemon`` on 127.0.0.1.
- **machine 1** (the team's checkout): configures the SSH remote as the project's DVC remote, pushes the
  code to the git server, runs the data stages (validate, split) of the micro profile and pushes their
  outputs and run-cache; deploys ``train-detector/remote``.
- **the worker**: an empty directory with its own HOME (its SSH key, its git identity), its own
  PREFECT_HOME and a virtual environment holding only Prefect (pinned by the lock); it has no access to
  the checkout. The deployment's pull steps clone the code from the git server, install it from the
  lock into that environment, ``dvc pull`` the run-cache; the flow runs the micro profile, pushes the
  outputs to the SSH remote and the experiment's commit to the git server, and registers to the MLflow
  server.

Faults, in the three runs of the worker: run 1 trains while the Prefect server is restarted, then finds
the DVC remote down at push (a clear error after bounded retries; the trained outputs stay in the
worker's cache); run 2 (remote back) restores every stage without training, pushes, and finds the MLflow
server stopped at registration (a clear error); run 3 (MLflow back) restores, registers. Then machine 1
fetches the experiment and pulls the worker's detector, and a third directory with no checkout judges a
text with it, read from the registry alone.

Run alone: ``pytest -m remote``. The phase times are printed, and written to the file named by
``CHINTOX_REHEARSAL_REPORT`` when it is set.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from integ_util import REPO, VENV_BIN, Proc, _api, base_env, clone_worktree, sh, stage_table, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.remote]

FLOW_TIMEOUT_S = float(os.environ.get("CHINTOX_FLOW_TIMEOUT_S", "900"))
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
NAME = "chinese-toxicity-detector"
# the stages that compute something (feedback_store only creates an empty store if none is there: DVC keeps
# no run-cache for its persistent output, so it always "runs")
WORK = ("validate", "split", "base", "stage1", "stage2", "evaluate")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _system_path() -> str:
    """PATH without this checkout's virtual environment: the worker sees none of it."""
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and Path(p).resolve() != VENV_BIN.resolve())


def _home(root: Path, stack=None) -> Path:
    """A machine's HOME: a git identity, and (for the worker) the SSH key the DVC remote accepts."""
    home = root / "home"
    home.mkdir(parents=True)
    (home / ".gitconfig").write_text(f"[user]\n\tname = {root.name}\n\temail = {root.name}@localhost\n")
    if stack is not None:
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700)
        shutil.copy2(stack.ssh_keyfile, ssh / "id_ed25519")
        os.chmod(ssh / "id_ed25519", 0o600)
        shutil.copy2(stack.ssh_known_hosts, ssh / "known_hosts")
    return home


def _uv() -> str:
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH (make setup installs it)"
    return uv


class Worker:
    """The second machine: a Prefect worker on the GPU pool, started from a venv holding only Prefect."""

    def __init__(self, root: Path, stack, lock_constraints: Path):
        self.root = root
        self.home = _home(root, stack)
        self.work = root / "work"  # the deployment's working_dir: the flow clones into it
        self.work.mkdir()
        (self.work / "shared").symlink_to(REPO.parent / "shared", target_is_directory=True)  # the data mount
        venv = root / "venv"
        uv_cache = sh([_uv(), "cache", "dir"], REPO, dict(os.environ)).strip()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PREFECT_", "MLFLOW_", "CHINTOX_", "VIRTUAL_ENV", "PYTHON", "UV_",
                                         "DVC_"))}
        self.env.update({
            "HOME": str(self.home), "PATH": f"{venv / 'bin'}{os.pathsep}{_system_path()}",
            "VIRTUAL_ENV": str(venv), "UV_CACHE_DIR": uv_cache, "TMPDIR": str(root),
            "PREFECT_HOME": str(root / "prefect-home"), "PREFECT_API_URL": stack.prefect_api_url,
            "PREFECT_LOCAL_STORAGE_PATH": str(root / "prefect-home" / "storage"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_CLIENT_MAX_RETRIES": "10",  # a Prefect server restart takes tens of seconds here
            "MLFLOW_TRACKING_URI": stack.mlflow_uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_ENABLE_UV_AUTO_DETECT": "false",
            "CHINTOX_MLFLOW_BACKOFF_S": "1",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "DO_NOT_TRACK": "1", "GIT_TERMINAL_PROMPT": "0",
        })
        t0 = time.monotonic()
        sh([_uv(), "venv", "-q", "--python", sys.executable, str(venv)], root, self.env)
        sh([_uv(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-c", str(lock_constraints),
            "prefect"], root, self.env)
        self.bootstrap_s = round(time.monotonic() - t0, 1)
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = Proc([str(self.root / "venv" / "bin" / "prefect"), "worker", "start", "--pool", "chintox-gpu",
                          "--type", "process", "--limit", "1"], self.root / "worker.log", self.env, cwd=self.work)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def _flow_run(api: str, deployment: str, params: dict) -> str:
    dep = _api(f"{api}/deployments/name/{deployment}")
    return _api(f"{api}/deployments/{dep['id']}/create_flow_run", "POST", {"parameters": params})["id"]


def _state(api: str, run_id: str) -> dict:
    return _api(f"{api}/flow_runs/{run_id}")["state"]


def _task_states(api: str, run_id: str) -> dict[str, str]:
    rows = _api(f"{api}/task_runs/filter", "POST", {"flow_runs": {"id": {"any_": [run_id]}}})
    return {r["name"].rsplit("-", 1)[0]: (r.get("state") or {}).get("type") for r in rows}


def _wait_end(api: str, run_id: str, worker: Worker) -> dict:
    def read():
        try:
            st = _state(api, run_id)
        except OSError:  # the Prefect server is restarting
            return None
        return st if st["type"] in TERMINAL else None
    try:
        return wait_for(read, FLOW_TIMEOUT_S, f"flow run {run_id}", every=2)
    except TimeoutError as e:
        raise AssertionError(f"{e}\n--- worker log\n{worker.proc.log.read_text()[-6000:]}") from e


def _wait_task(api: str, run_id: str, task: str, states: set[str], timeout: float = FLOW_TIMEOUT_S) -> None:
    wait_for(lambda: True if _task_states(api, run_id).get(task) in states else None, timeout,
             f"task {task} of flow run {run_id} in {sorted(states)}", every=0.5)


def _logs(api: str, run_id: str) -> list[dict]:
    rows: list[dict] = []
    while True:  # the API pages by 200
        page = _api(f"{api}/logs/filter", "POST", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200,
                                                   "offset": len(rows), "sort": "TIMESTAMP_ASC"})
        rows += page
        if len(page) < 200:
            return rows


def _ts(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def _pull_step_times(api: str, run_id: str) -> dict[str, float]:
    """``{clone, install, dvc pull}``: seconds of the three pull steps, in order."""
    times, started = [], None
    for row in _logs(api, run_id):
        msg = row["message"]
        if msg.startswith("Executing deployment step: "):
            started = _ts(row["timestamp"])
        elif msg.startswith("Deployment step '") and started is not None:
            times.append(round(_ts(row["timestamp"]) - started, 1))
            started = None
    assert len(times) == 3, f"expected the three pull steps of prefect.yaml, logged {times}"
    return dict(zip(("pull code", "install", "dvc pull"), times, strict=True))


def _task_times(api: str, run_id: str) -> dict[str, float]:
    rows = _api(f"{api}/task_runs/filter", "POST", {"flow_runs": {"id": {"any_": [run_id]}}})
    return {r["name"].rsplit("-", 1)[0]: round(_ts(r["end_time"]) - _ts(r["start_time"]), 1)
            for r in rows if r.get("start_time") and r.get("end_time")}


def _stages(api: str, run_id: str) -> dict[str, str]:
    rows = _api(f"{api}/artifacts/filter", "POST", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    return stage_table(next(a["data"] for a in rows if a.get("key") == "train-detector-stages"))


@pytest.fixture
def stack(tmp_path):
    from chintox.services import Services

    s = Services(tmp_path / "stack", pg_port=0, mlflow_port=0, prefect_port=0, ssh_port=0)
    try:
        s.start()
        yield s
    finally:
        s.purge()  # stop, and remove the cluster (it may live in the temp dir, see chintox.services)


def test_remote_worker_from_git_and_dvc_remote_with_faults(stack, tmp_path):
    from mlflow import MlflowClient

    from chintox.provenance import dir_sha256

    procs: list[Proc] = []
    worker: Worker | None = None
    report: dict = {}
    try:
        # ---- machine 1: the SSH remote as the project's remote, the code on the git server
        m1 = tmp_path / "machine1"
        repo = clone_worktree(m1)
        env1 = base_env(m1)
        env1.update({"HOME": str(_home(m1)), "PREFECT_API_URL": stack.prefect_api_url,
                     "PREFECT_HOME": str(m1 / "prefect-home"), "MLFLOW_TRACKING_URI": stack.mlflow_uri,
                     "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        py1 = str(VENV_BIN / "python")
        sh([py1, "-m", "chintox.cli", "services", "dvc-remote", "--state-dir", str(stack.state_dir), "--default"],
           repo, env1)
        sh(["git", "commit", "-q", "-am", "the team's DVC remote, over SSH"], repo, env1)
        git_root = tmp_path / "git"
        git_root.mkdir()
        sh(["git", "clone", "-q", "--bare", str(repo), str(git_root / "chintox.git")], tmp_path, env1)
        git_port = _free_port()
        daemon = Proc(["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
                       f"--base-path={git_root}", "--listen=127.0.0.1", f"--port={git_port}", str(git_root)],
                      tmp_path / "git-daemon.log", env1)
        procs.append(daemon)
        git_url = f"git://127.0.0.1:{git_port}/chintox.git"
        wait_for(lambda: True if subprocess.run(["git", "ls-remote", git_url], capture_output=True,
                                                check=False).returncode == 0 else None, 60, "git daemon")
        sh(["git", "remote", "add", "origin", git_url], repo, env1)

        # the data stages of the micro profile, run here as a flow runs them (a DVC experiment with the
        # flow's parameters: the data's absolute path is part of a stage's run-cache key, so every machine
        # mounts the data at the same path); outputs and run-cache to the SSH remote
        from flows import _dvc

        data_exp = _dvc.run_experiment(repo, "machine1-data", _dvc.set_params(repo, "micro", None), ["split"],
                                       {**env1, "PATH": f"{VENV_BIN}{os.pathsep}{env1['PATH']}"}, log=lambda _: None)
        assert set(data_exp.stages) == {"validate", "split"}, data_exp.stages
        assert _dvc.push(repo, data_exp.rev, ["split"]) > 0
        assert any(p.is_file() for p in stack.dvc_remote_dir.rglob("*")), "nothing reached the SSH remote"

        # the deployment (pull steps: clone from the git server, install from the lock, dvc pull)
        worker = Worker(tmp_path / "worker", stack, _constraints(tmp_path))
        report["worker bootstrap (venv with Prefect only)"] = worker.bootstrap_s
        denv = {**env1, "CHINTOX_GIT_URL": git_url, "CHINTOX_GIT_BRANCH": "main"}
        prefect = str(VENV_BIN / "prefect")
        sh([prefect, "work-pool", "create", "chintox-gpu", "--type", "process"], repo, denv)
        sh([prefect, "--no-prompt", "deploy", "--prefect-file", str(repo / "prefect.yaml"), "--name",
            "train-detector/remote", "--job-variable", f"working_dir={worker.work}"], repo, denv)
        worker.start()
        api = stack.prefect_api_url
        params = {"profile": "micro", "backend": "hf"}

        # ---- run 1: trains; the Prefect server restarts meanwhile; the DVC remote is down at push
        run1 = _flow_run(api, "train-detector/remote", params)
        # once the data stages are restored from the remote (`dvc exp run --pull`) and training is under way
        wait_for(lambda: True if any("Running stage 'stage1'" in r["message"] for r in _logs(api, run1)) else None,
                 FLOW_TIMEOUT_S, "stage1 running on the worker", every=1)
        stack.stop(["sshd"])
        stack.stop(["prefect"])
        stack.start(["prefect"])
        state = _wait_end(api, run1, worker)
        msgs = "\n".join(r["message"] for r in _logs(api, run1))
        assert state["type"] == "FAILED", (state, msgs[-4000:])
        assert _task_states(api, run1).get("dvc-experiment") == "COMPLETED"
        assert "dvc push of experiment" in msgs and "to the DVC remote 'shared'" in msgs and "Nothing is lost" in msgs
        assert "register" not in _task_states(api, run1)
        clone = worker.work / "chintox-main"
        assert (clone / ".dvc" / "cache").is_dir()
        report.update(_pull_step_times(api, run1))
        report["train (dvc-experiment)"] = _task_times(api, run1)["dvc-experiment"]
        ran1 = _stages_from_logs(msgs)
        assert {s: ran1.get(s) for s in ("validate", "split")} == {"validate": "restored from run-cache", "split": "restored from run-cache"}, ran1
        assert {s: ran1.get(s) for s in ("base", "stage1", "stage2", "evaluate")} == dict.fromkeys(
            ("base", "stage1", "stage2", "evaluate"), "ran"), ran1

        # ---- run 2: the remote is back; nothing retrains; MLflow is stopped before registration
        stack.start(["sshd"])
        run2 = _flow_run(api, "train-detector/remote", params)
        _wait_task(api, run2, "dvc-experiment", {"COMPLETED"})
        stack.stop(["mlflow"])
        state = _wait_end(api, run2, worker)
        msgs = "\n".join(r["message"] for r in _logs(api, run2))
        assert state["type"] == "FAILED", (state, msgs[-4000:])
        tasks2 = _task_states(api, run2)
        assert tasks2.get("dvc-push") == "COMPLETED" and tasks2.get("register") in {"FAILED", "CRASHED"}, tasks2
        assert "could not be reached" in msgs and stack.mlflow_uri in msgs, msgs[-4000:]
        ran2 = _stages(api, run2)
        assert {s: ran2.get(s) for s in WORK} == dict.fromkeys(WORK, "restored from run-cache"), ran2  # no retraining
        report["push (dvc-push)"] = _task_times(api, run2)["dvc-push"]
        report["push experiment commit (dvc-exp-push)"] = _task_times(api, run2)["dvc-exp-push"]

        # ---- run 3: MLflow is back; restores, registers
        stack.start(["mlflow"])
        run3 = _flow_run(api, "train-detector/remote", params)
        state = _wait_end(api, run3, worker)
        msgs = "\n".join(r["message"] for r in _logs(api, run3))
        assert state["type"] == "COMPLETED", (state, msgs[-4000:])
        ran3 = _stages(api, run3)
        assert {s: ran3.get(s) for s in WORK} == dict.fromkeys(WORK, "restored from run-cache"), ran3
        report["register"] = _task_times(api, run3)["register"]

        # ---- the registry (PostgreSQL behind the MLflow server) holds the worker's detector
        c = MlflowClient(tracking_uri=stack.mlflow_uri)
        mv = c.get_model_version_by_alias(NAME, "challenger")
        tags = mv.tags
        assert tags["profile"] == "micro"
        exp_name, exp_rev = tags["dvc.exp_name"], tags["dvc.exp_rev"]

        # ---- machine 1 fetches the experiment from the git server and the detector from the SSH remote
        sh([str(VENV_BIN / "dvc"), "exp", "pull", "origin", exp_name], repo, env1)
        sh(["git", "checkout", "-q", "-f", exp_rev], repo, env1)
        sh([str(VENV_BIN / "dvc"), "pull", "-q", "stage2"], repo, env1)
        lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
        md5 = {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}
        assert tags["dvc.md5.models/stage2"] == md5["models/stage2"]
        assert tags["detector_sha256"] == dir_sha256(repo / "models" / "stage2")

        # ---- promotion (the Prefect lock), then a third directory judges a text from the registry alone
        out = sh([py1, "-m", "chintox.cli", "promote", "--profile", "micro"], repo, env1)
        assert '"promoted"' in out and "prefect:" in out, out
        third = tmp_path / "third"
        third.mkdir()
        shutil.copy2(repo / "params.yaml", third / "params.yaml")
        env3 = {**env1, "HOME": str(_home(third)), "TMPDIR": str(third)}
        out = sh([py1, "-m", "chintox.cli", "detect", "你这种人就不配活着。", "--profile", "micro"], third, env3)
        judged = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
        assert judged["model_version"] == str(mv.version) and judged["label"] in (0, 1), judged
        assert sorted(p.name for p in third.iterdir() if p.is_file()) == ["params.yaml"]  # no checkout, no model
        assert not (third / ".dvc").exists() and not (third / "models").exists()
    finally:
        if worker is not None:
            worker.stop()
        for p in reversed(procs):
            p.stop()
        print("rehearsal phases (s):", json.dumps(report, ensure_ascii=False))
        if os.environ.get("CHINTOX_REHEARSAL_REPORT") and report:
            Path(os.environ["CHINTOX_REHEARSAL_REPORT"]).write_text(json.dumps(report, indent=2, ensure_ascii=False))


def _stages_from_logs(msgs: str) -> dict[str, str]:
    """What DVC did per stage in run 1, from the flow's log of ``dvc exp run`` (run 1 made no artifact:
    it failed before)."""
    from flows._dvc import parse_stages

    return parse_stages(msgs)


def _constraints(tmp: Path) -> Path:
    """The lock's pins as a constraints file: what the worker machine's admin installs Prefect with."""
    out = tmp / "lock-constraints.txt"
    sh([_uv(), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-o", str(out)], REPO,
       dict(os.environ))
    return out
