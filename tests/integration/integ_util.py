"""Helpers (imported by name) for the integration tests of the registry, the MLflow server, the browser and Prefect."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = float(os.environ.get("CHINTOX_FLOW_TIMEOUT_S", "900"))
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests" / "unit" / "registry"))

import microdet  # noqa: F401 (re-exported for the fixtures)
from testutil import refused_port  # noqa: F401 (re-exported for the tests)


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"process for {url} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status < 500:
                    return
        except OSError:
            pass
        time.sleep(1)
    tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} not up after {timeout:.0f} s:\n{tail}")


def wait_for(read, timeout: float, what: str, every: float = 1.0):
    """Call ``read()`` until it returns something other than None (then return that), for at most
    ``timeout`` seconds; a server's view of a change is awaited, never read once."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not there after {timeout:.0f} s")
        time.sleep(every)


def wait_log(log: Path, pattern: str, timeout: float, proc: subprocess.Popen | None = None) -> re.Match:
    """Poll ``log`` until ``pattern`` matches (a server reporting the port it picked, say); fails with
    the log's tail if the process exits first or the deadline passes."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        m = rx.search(text)
        if m:
            return m
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before logging {pattern!r}:\n{text[-4000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pattern!r} not in {log} after {timeout:.0f} s:\n{text[-4000:]}")
        time.sleep(0.2)


def listening_port(proc: subprocess.Popen, timeout: float, log: Path | None = None) -> int:
    """The TCP port a server started with port 0 listens on, read from the OS (the process or a child)."""
    import psutil

    def read() -> int | None:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode} before listening:\n{tail}")
        try:
            procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return None
        for p in procs:
            try:
                ports = [c.laddr.port for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
            except psutil.NoSuchProcess:
                continue
            if ports:
                return ports[0]
        return None

    return wait_for(read, timeout, f"the listening port of pid {proc.pid}", every=0.5)


class Proc:
    """A background command in its own process group, logged to a file, stopped by its id."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str], cwd: Path = REPO,
                 stdin: int | None = None):
        """``stdin=subprocess.PIPE``: ``self.p.stdin`` takes text (a shell fed one command at a time)."""
        self.log = log
        self._fh = log.open("w")
        self.p = subprocess.Popen(args, cwd=cwd, env=env, stdin=stdin, stdout=self._fh,
                                  stderr=subprocess.STDOUT, start_new_session=True, text=stdin is not None)

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)  # the group this test started, by its id
                self.p.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.p.stdin is not None:
            try:
                self.p.stdin.close()
            except OSError:  # the shell is gone and its pipe with it
                pass
        self._fh.close()


def base_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
        "PYTHONPATH": str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "DO_NOT_TRACK": "1", "MLFLOW_ENABLE_UV_AUTO_DETECT": "false",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "CHINTOX_MLFLOW_BACKOFF_S": "0.5",
    })
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("CHINTOX_PARENT_RUN_ID", None)
    return env


def clone_worktree(dest: Path) -> Path:
    """A new git repository at ``dest/repo`` holding this checkout's working tree as one commit (tracked
    and untracked-but-not-ignored files: what a fresh clone of it would hold), with the real data at
    ``dest/shared`` (as ``../shared`` beside a clone) and its DVC remote at ``dest/chintox-dvc-remote``
    (the remote in .dvc/config is relative to the clone). Nothing the tests run there touches this
    checkout's outputs, cache or remote."""
    import shutil

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    repo = dest / "repo"
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / rel)
    (dest / "shared").symlink_to(REPO.parent / "shared", target_is_directory=True)
    git = ["git", "-c", "user.name=chintox-tests", "-c", "user.email=tests@localhost"]
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "working tree under test"]):
        subprocess.run(git + cmd, cwd=repo, check=True, capture_output=True)
    return repo


# ---------------------------------------------------------------- a real Prefect server and worker

# Prefect's server answers 503 when its database is busy (SQLite's SQLITE_BUSY on a loaded machine) and
# its own client retries those; so does this one, as Prefect's client does (429, 502, 503), for a bounded time.
API_RETRY_CODES = {429, 502, 503}
API_RETRY_FOR_S = 120.0


def _api(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    deadline = time.monotonic() + API_RETRY_FOR_S
    wait = 0.5
    while True:
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            if e.code not in API_RETRY_CODES or time.monotonic() > deadline:
                raise
            retry_after = e.headers.get("Retry-After") if e.headers else None
            time.sleep(float(retry_after) if retry_after and retry_after.isdigit() else wait)
            wait = min(wait * 2, 10.0)


class PrefectStack:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME and SQLite db, the work pool,
    the deployments of prefect.yaml (deployed with the CLI) and a process worker."""

    def __init__(self, tmp: Path, repo: Path = REPO):
        self.tmp = tmp
        self.repo = repo
        self.api = ""  # known once the server has picked its port (start)
        home = tmp / "prefect_home"
        home.mkdir()
        self.env = base_env(tmp)
        self.env.update({
            "PREFECT_HOME": str(home),
            # results (the task cache) default to ~/.prefect/storage whatever PREFECT_HOME says
            "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PWD": str(repo),  # prefect.yaml's */local deployments run the code of this checkout
        })
        self.procs: list[Proc] = []

    def start(self) -> None:
        """The server picks its own free port (``--port 0``); the port it listens on is read from the OS
        (Prefect's banner only repeats the 0), so no port is chosen here and then raced for."""
        self.server = Proc([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                            "--port", "0"], self.tmp / "prefect-server.log", self.env)
        self.procs.append(self.server)
        port = listening_port(self.server.p, 240, self.server.log)
        self.api = f"http://127.0.0.1:{port}/api"
        self.env["PREFECT_API_URL"] = self.api
        wait_http(f"{self.api}/health", 240, self.server.p, self.server.log)
        self.cli("work-pool", "create", "chintox-cpu", "--type", "process")

    def cli(self, *args: str, timeout: float = 300) -> str:
        r = subprocess.run([str(VENV_BIN / "prefect"), *args], cwd=self.repo, env=self.env, capture_output=True,
                           text=True, timeout=timeout, check=False)
        assert r.returncode == 0, f"prefect {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r.stdout

    def deploy(self, name: str) -> None:
        self.cli("--no-prompt", "deploy", "--prefect-file", str(self.repo / "prefect.yaml"), "--name", name)

    def start_worker(self) -> None:
        w = Proc([str(VENV_BIN / "prefect"), "worker", "start", "--pool", "chintox-cpu", "--type", "process",
                  "--limit", "1"], self.tmp / "prefect-worker.log", self.env, cwd=self.repo)
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

    def task_states(self, flow_run_id: str, expect: set[str], timeout: float = 60) -> dict[str, str]:
        """``{task name: state name}`` of a flow run's task runs (name without the run suffix), awaited
        until every task in ``expect`` has a final state: Prefect records task runs asynchronously, so a
        read right after the flow finished can miss one or find it stateless."""
        def read() -> dict[str, str] | None:
            rows = _api(f"{self.api}/task_runs/filter", "POST", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
            states = {r["name"].rsplit("-", 1)[0]: (r.get("state") or {}).get("type") for r in rows}
            return states if all(states.get(t) in TERMINAL for t in expect) else None
        return wait_for(read, timeout, f"task states {sorted(expect)} of flow run {flow_run_id}")

    def artifacts(self, flow_run_id: str, expect: set[str], timeout: float = 60) -> dict[str, str]:
        """``{key: markdown}`` of a flow run's artifacts, awaited until every key in ``expect`` is there."""
        def read() -> dict[str, str] | None:
            rows = _api(f"{self.api}/artifacts/filter", "POST",
                        {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
            found = {a["key"]: a.get("data") or "" for a in rows if a.get("key")}
            return found if expect <= set(found) else None
        return wait_for(read, timeout, f"artifacts {sorted(expect)} of flow run {flow_run_id}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def assert_completed(stack: PrefectStack, run: dict) -> None:
    assert run["state"]["type"] == "COMPLETED", (
        f"{run['state']['type']}: {run['state'].get('message')}\n--- flow logs\n{stack.logs(run['id'])}\n"
        f"--- worker log\n{stack.worker.log.read_text()[-4000:]}")


def stage_table(markdown: str) -> dict[str, str]:
    """``{stage: what DVC did}`` from a flow's ``*-stages`` artifact (flows._pipeline.stages_markdown)."""
    rows = dict(re.findall(r"^\| (\w+) \| ([^|]+?) \|$", markdown, flags=re.MULTILINE))
    rows.pop("stage", None)  # the header
    return rows


def sh(cmd: list[str], cwd: Path, env: dict) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


