"""Helpers (imported by name) for the integration tests of the registry, the MLflow server, the browser and Prefect."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
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
