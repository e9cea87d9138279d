"""The shared stack a team runs, on 127.0.0.1: PostgreSQL, an MLflow tracking server, a Prefect server and
an SSH server hosting a DVC remote, all under one state directory (default ``.services/``).

    .services/
      state.json          ports, and for each running server its PID, process start time and group
      secrets.json        the generated PostgreSQL passwords (mode 0600)
      logs/<name>.log     each server's stdout and stderr
      pg/                 the PostgreSQL cluster (data/, run/ for the unix socket); see below when root
      mlflow-artifacts/   MLflow's artifact store, proxied by the server (clients need no storage path)
      prefect-home/       PREFECT_HOME of the Prefect server
      ssh/                sshd_config, host key, client key id_ed25519, authorized_keys, known_hosts
      dvc-remote/         the storage folder of the DVC remote reached over SSH

- **postgres**: ``initdb`` on first start (scram-sha-256 everywhere; superuser ``postgres`` and role
  ``chintox``, both with generated passwords), listening on 127.0.0.1 only; databases ``mlflow`` and
  ``prefect`` owned by ``chintox``. PostgreSQL refuses to run as root: as root the cluster belongs to
  the ``postgres`` system user (made by the Debian package) and its processes run as that user. Should
  the state directory not be reachable by that user (a 0700 parent, say), or the unix socket's path be
  too long, the cluster lives in a directory of its own in the system temp dir instead (recorded in
  state.json as ``pg_root``).
- **mlflow**: ``mlflow server`` on the ``mlflow`` database (its URI, password included, is passed in the
  environment, not on the command line) with ``--serve-artifacts``: clients log artifacts through it.
- **prefect**: ``prefect server start`` on the ``prefect`` database.
- **sshd**: ``/usr/sbin/sshd`` with its own config, host key and authorized key, for the user running
  this (key only; ``UsePAM no``, except as root for an account whose password is locked, which sshd
  would otherwise refuse); the DVC remote is ``ssh://USER@127.0.0.1:PORT<state>/dvc-remote`` with the
  generated key (:meth:`Services.dvc_remote`). dvc-ssh checks no host key (it connects with
  ``known_hosts=None`` and has no setting for one); ``ssh/known_hosts`` serves clients that do.

Ports default to PostgreSQL 55432, MLflow 5000, Prefect 4200, sshd 2222; a constructor argument or the
environment (``CHINTOX_PG_PORT``, ``CHINTOX_MLFLOW_PORT``, ``CHINTOX_PREFECT_PORT``, ``CHINTOX_SSH_PORT``)
chooses others, 0 meaning "any free port". Once a service has had a port, it keeps it: it is recorded in
state.json, and a later start (of that service alone, say, after stopping it) binds the same one, so
clients keep their URL. ``start`` is idempotent per service; ``stop`` stops exactly the processes that
``start`` recorded (checked by PID *and* start time, signalled by process group, never by name).
Each server runs in a session of its own, so a Ctrl-C in the shell that started it does not stop it.
Stopping PostgreSQL alone leaves MLflow and Prefect running; they reconnect once it is back.

    svc = Services()            # or Services(".services", mlflow_port=0, ...)
    svc.start()                 # or svc.start(["prefect"])
    os.environ.update(svc.env())  # MLFLOW_TRACKING_URI, PREFECT_API_URL
    svc.stop()                  # svc.purge(): stop and delete all data

The command line is ``chintox services start|stop|status|env|dvc-remote`` (``make services``).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("chintox.services")

HOST = "127.0.0.1"
SERVICES: tuple[str, ...] = ("postgres", "mlflow", "prefect", "sshd")
DEFAULT_PORTS: dict[str, int] = {"postgres": 55432, "mlflow": 5000, "prefect": 4200, "sshd": 2222}
PORT_ENV: dict[str, str] = {"postgres": "CHINTOX_PG_PORT", "mlflow": "CHINTOX_MLFLOW_PORT",
                            "prefect": "CHINTOX_PREFECT_PORT", "sshd": "CHINTOX_SSH_PORT"}
STATE_DIR_ENV = "CHINTOX_SERVICES_DIR"
DEFAULT_STATE_DIR = ".services"
DEPENDS: dict[str, tuple[str, ...]] = {"mlflow": ("postgres",), "prefect": ("postgres",)}
PG_ROLE = "chintox"
PG_SUPERUSER = "postgres"
PG_DATABASES = ("mlflow", "prefect")
PG_SYSTEM_USER = "postgres"  # the owner of clusters when started by root (Debian package `postgresql`)
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; keep a margin
_TAIL = 4000


class ServicesError(RuntimeError):
    """The stack cannot be started or stopped as asked; the message says what and what to do."""


# ------------------------------------------------------------------------------------------ helpers

def _port_free(port: int) -> bool:
    """Whether a server could listen on ``HOST:port`` now (bound the way servers bind: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _listening(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _holder(port: int) -> str:
    """Who listens on ``port`` (best effort: ``pid N (cmd)``; empty where the OS does not tell)."""
    import psutil

    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                try:
                    return f"pid {c.pid} ({' '.join(psutil.Process(c.pid).cmdline())[:120]})"
                except psutil.Error:
                    return f"pid {c.pid}"
    except (psutil.Error, OSError):
        pass
    return ""


def _tail(path: Path, since: int = 0) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(since, path.stat().st_size - _TAIL))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (atomically: a temp file renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _traversable(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may reach ``path`` (search permission on it and every parent; ACLs ignored)."""
    gids = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for d in (path, *path.parents):
        st = d.stat()
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _own_bin(name: str, package: str) -> str:
    """An executable of this Python environment (next to the interpreter), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(name)
    if not found:
        raise ServicesError(f"`{name}` not found (the Python package {package}): install the project's "
                            "environment (make setup)")
    return found


def _wait_gone(procs: list, timeout: float) -> list:
    """The processes of ``procs`` still alive after at most ``timeout`` seconds (a zombie is gone: its
    parent, often init, reaps it in its own time)."""
    import psutil

    def alive(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, whatever http_proxy says


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 (directly: no proxy for a loopback server)."""
    try:
        with _DIRECT.open(url, timeout=5) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


def mlflow_server(store_uri: str, artifacts_dir: Path, port: int, env: dict[str, str]) -> tuple[list[str], dict]:
    """The command and environment of ``mlflow server`` on ``store_uri`` with proxied artifacts in
    ``artifacts_dir``, on 127.0.0.1:``port``, one worker, no job execution (it then starts in seconds).
    The store URI (with its password) goes through the environment: not in the process list."""
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    env = {**env, "MLFLOW_BACKEND_STORE_URI": store_uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [_own_bin("mlflow", "mlflow"), "server", "--artifacts-destination", str(artifacts_dir),
           "--serve-artifacts", "--host", HOST, "--port", str(port), "--workers", "1"]
    return cmd, env


# ------------------------------------------------------------------------------------------ the stack

class Services:
    """PostgreSQL, MLflow, Prefect and sshd on 127.0.0.1, with their state under ``state_dir``.

    ``*_port``: None (the default) means the environment's ``CHINTOX_*_PORT``, else the port recorded
    by an earlier start, else the default; 0 means the recorded port, else any free one; another number
    is that port. ``timeout``: seconds a server may take to answer after its start."""

    def __init__(self, state_dir: str | os.PathLike | None = None, *, pg_port: int | None = None,
                 mlflow_port: int | None = None, prefect_port: int | None = None,
                 ssh_port: int | None = None, timeout: float = 180.0, stop_timeout: float = 20.0):
        if state_dir is None:
            state_dir = os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        asked = {"postgres": pg_port, "mlflow": mlflow_port, "prefect": prefect_port, "sshd": ssh_port}
        self._asked: dict[str, int | None] = {}
        for name, port in asked.items():
            if port is None and os.environ.get(PORT_ENV[name], "").strip():
                try:
                    port = int(os.environ[PORT_ENV[name]])
                except ValueError as e:
                    raise ServicesError(f"{PORT_ENV[name]}={os.environ[PORT_ENV[name]]!r} is not a "
                                        "port") from e
            if port is not None and not 0 <= port < 65536:
                raise ServicesError(f"port {port} for {name} is out of range")
            self._asked[name] = port
        self._popen: dict[str, subprocess.Popen] = {}  # reaped on stop (no zombies in a long-lived caller)

    def __repr__(self) -> str:
        return f"Services({str(self.state_dir)!r})"

    # ---------------------------------------------------------------- paths
    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, name: str) -> Path:
        """``<state>/logs/<name>.log``: the server's stdout and stderr (appended to at each start)."""
        return self.logs_dir / f"{name}.log"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def ssh_keyfile(self) -> Path:
        """The client's private key, authorized by the sshd of this stack."""
        return self.ssh_dir / "id_ed25519"

    @property
    def ssh_known_hosts(self) -> Path:
        """A known_hosts file with this sshd's host key for ``[127.0.0.1]:PORT`` (strict host checking)."""
        return self.ssh_dir / "known_hosts"

    @property
    def dvc_remote_dir(self) -> Path:
        return self.state_dir / "dvc-remote"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.state_dir / "mlflow-artifacts"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect-home"

    @property
    def pg_root(self) -> Path | None:
        """The cluster's directory (``data/``, ``run/``) once the first start has chosen it, else None."""
        root = self._read_state().get("pg_root")
        return Path(root) if root else None

    # ---------------------------------------------------------------- state file
    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.state_dir / "state.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            state = {}
        except (OSError, ValueError) as e:
            raise ServicesError(f"unreadable {self.state_dir / 'state.json'}: {e}") from e
        state.setdefault("ports", {})
        state.setdefault("processes", {})
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        path = self.state_dir / "state.json"
        tmp = path.with_name(".state.json.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One start or stop at a time on a state directory (another caller waits)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _secrets(self) -> dict[str, str]:
        path = self.state_dir / "secrets.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        values = {"pg_superuser_password": secrets.token_urlsafe(24),
                  "pg_password": secrets.token_urlsafe(24)}
        _write_private(path, json.dumps(values, indent=2) + "\n")
        return values

    # ---------------------------------------------------------------- ports and URLs
    def port(self, name: str) -> int:
        """The port ``name`` listens on (running), else the one it would get at its next start (see the
        class doc); an error for a service asked for any free port (0) that has never started."""
        self._check_names([name])
        state = self._read_state()
        recorded = state["ports"].get(name)
        asked = self._asked[name]
        if recorded and self._proc(state["processes"].get(name)) is not None:
            return int(recorded)  # running: its port, whatever this object was asked
        if asked:
            return asked
        if recorded:
            return int(recorded)
        if asked == 0:
            raise ServicesError(f"{name} has no port yet (asked for any free port): start it first")
        return DEFAULT_PORTS[name]

    @property
    def mlflow_uri(self) -> str:
        return f"http://{HOST}:{self.port('mlflow')}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{HOST}:{self.port('prefect')}/api"

    @property
    def ssh_user(self) -> str:
        return pwd.getpwuid(os.geteuid()).pw_name

    @property
    def dvc_remote_url(self) -> str:
        return f"ssh://{self.ssh_user}@{HOST}:{self.port('sshd')}{self.dvc_remote_dir}"

    def dvc_remote(self) -> dict[str, str]:
        """What a DVC project needs to use the SSH remote: ``url``, ``keyfile``, ``known_hosts``."""
        return {"url": self.dvc_remote_url, "keyfile": str(self.ssh_keyfile),
                "known_hosts": str(self.ssh_known_hosts)}

    def pg_url(self, database: str = "mlflow", driver: str | None = None, password: bool = True) -> str:
        """``postgresql[+driver]://chintox[:password]@127.0.0.1:PORT/database``."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        cred = f"{PG_ROLE}:{self._secrets()['pg_password']}" if password else PG_ROLE
        return f"{scheme}://{cred}@{HOST}:{self.port('postgres')}/{database}"

    def env(self) -> dict[str, str]:
        """The environment variables a client of the stack sets."""
        return {"MLFLOW_TRACKING_URI": self.mlflow_uri, "PREFECT_API_URL": self.prefect_api_url}

    def url(self, name: str) -> str:
        return {"postgres": lambda: self.pg_url("mlflow", password=False).rsplit("/", 1)[0],
                "mlflow": lambda: self.mlflow_uri, "prefect": lambda: self.prefect_api_url,
                "sshd": lambda: self.dvc_remote_url}[name]()

    # ---------------------------------------------------------------- processes
    @staticmethod
    def _check_names(names: Iterable[str]) -> None:
        unknown = [n for n in names if n not in SERVICES]
        if unknown:
            raise ServicesError(f"unknown service(s) {', '.join(unknown)}: choose from {', '.join(SERVICES)}")

    def _proc(self, rec: dict | None):
        """The live process a record names (same PID *and* start time), else None."""
        import psutil

        if not rec:
            return None
        try:
            p = psutil.Process(rec["pid"])
            if abs(p.create_time() - rec["create_time"]) > 0.05 or p.status() == psutil.STATUS_ZOMBIE:
                return None
            return p
        except psutil.Error:
            return None

    def pids(self) -> dict[str, int]:
        """The PIDs of the running servers this state directory started (the leader of each group)."""
        procs = self._read_state()["processes"]
        return {n: rec["pid"] for n, rec in procs.items() if self._proc(rec) is not None}

    def is_up(self, name: str) -> bool:
        return self._proc(self._read_state()["processes"].get(name)) is not None

    def status(self) -> dict[str, dict[str, Any]]:
        """``{service: {"up", "pid", "port", "url", "listening"}}`` for every service."""
        state = self._read_state()
        out = {}
        for name in SERVICES:
            rec = state["processes"].get(name)
            up = self._proc(rec) is not None
            try:
                port, url = self.port(name), self.url(name)
            except ServicesError:
                port = url = None
            out[name] = {"up": up, "pid": rec["pid"] if up else None, "port": port, "url": url,
                         "listening": bool(up and port and _listening(port))}
        return out

    def _open_log(self, name: str):
        """The service's log, opened for appending (created readable by its owner only)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        return os.fdopen(os.open(self.log_path(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")

    def _launch(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, state: dict,
                **popen_kw) -> subprocess.Popen:
        """Start ``cmd`` in a session of its own, output to its log; record PID and start time."""
        import psutil

        with self._open_log(name) as fh:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            fh.write(f"\n==== {stamp} chintox services: starting {name}\n".encode())
            fh.flush()
            offset = fh.tell()
            p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=fh,
                                 stderr=subprocess.STDOUT, start_new_session=True, **popen_kw)
        self._popen[name] = p
        try:
            created = psutil.Process(p.pid).create_time()
        except psutil.Error:  # gone already: the wait reports it with the log
            created = 0.0
        state["processes"][name] = {"pid": p.pid, "create_time": created, "port": state["ports"][name],
                                    "cmd": cmd[:2], "log_offset": offset}
        self._write_state(state)
        return p

    def _await(self, name: str, ready, p: subprocess.Popen, what: str, state: dict) -> None:
        """Wait until ``ready()`` or fail with the log's tail (stopping what was started)."""
        deadline = time.monotonic() + self.timeout
        offset = state["processes"][name].get("log_offset", 0)
        while True:
            if ready():
                return
            if p.poll() is not None:
                self._terminate(name, state)  # what it may have left in its group; forgets the record
                tail = _tail(self.log_path(name), offset)
                raise ServicesError(f"{name} exited with code {p.returncode} before {what}; "
                                    f"last lines of {self.log_path(name)}:\n{tail}")
            if time.monotonic() > deadline:
                tail = _tail(self.log_path(name), offset)
                self._terminate(name, state)
                raise ServicesError(f"{name}: {what} not within {self.timeout:.0f} s (stopped it again); "
                                    f"last lines of {self.log_path(name)}:\n{tail}")
            time.sleep(0.5)

    # ---------------------------------------------------------------- start
    def start(self, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Start the named services (default: all) and the ones they need; one already running is left
        as it is. Returns :meth:`status`."""
        names = list(SERVICES) if names is None else list(names)
        self._check_names(names)
        wanted = set(names)
        for n in list(wanted):
            wanted.update(DEPENDS.get(n, ()))
        order = [n for n in SERVICES if n in wanted]
        with self._locked():
            state = self._read_state()
            todo = [n for n in order if self._proc(state["processes"].get(n)) is None]
            for n in order:
                if n not in todo:
                    log.info("%s already running (pid %s)", n, state["processes"][n]["pid"])
            self._assign_ports(todo, state)
            if "postgres" in todo:
                self._start_postgres(state)
            launched = []
            for n in ("sshd", "mlflow", "prefect"):  # started together, then awaited: they start in parallel
                if n in todo:
                    launched.append((n, getattr(self, f"_launch_{n}")(state)))
            errors = []
            for n, (p, ready, what) in launched:
                try:
                    self._await(n, ready, p, what, state)
                    log.info("%s up: %s", n, self.url(n))
                except ServicesError as e:
                    errors.append(str(e))
            if errors:
                raise ServicesError("\n\n".join(errors))
        return self.status()

    def _assign_ports(self, todo: list[str], state: dict) -> None:
        """Each service to start gets its port (see the class doc), checked free first: all or none."""
        chosen: dict[str, int] = {}
        for n in todo:
            asked, recorded = self._asked[n], state["ports"].get(n)
            if asked:
                port = asked
            elif recorded:
                port = int(recorded)
            elif asked == 0:
                taken = set(chosen.values()) | {int(v) for v in state["ports"].values()}
                port = free_port()
                while port in taken:
                    port = free_port()
            else:
                port = DEFAULT_PORTS[n]
            if port in chosen.values():
                other = next(k for k, v in chosen.items() if v == port)
                raise ServicesError(f"port {port} is asked for both {other} and {n}")
            chosen[n] = port
        busy = [(n, p) for n, p in chosen.items() if not _port_free(p)]
        if busy:
            lines = []
            for n, p in busy:
                who = _holder(p)
                lines.append(f"port {p} for {n} on {HOST} is already in use"
                             f"{' by ' + who if who else ''}: stop that program, or choose another port "
                             f"({PORT_ENV[n]}=PORT, or 0 for any free port)")
            raise ServicesError("\n".join(lines))
        state["ports"].update(chosen)
        self._write_state(state)

    # ---- postgres
    def _pg_bindir(self) -> Path:
        need = ("initdb", "postgres", "pg_ctl")
        candidates: list[Path] = []
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run([pg_config, "--bindir"], check=False, capture_output=True, text=True,
                                     timeout=10)
                if out.returncode == 0 and out.stdout.strip():
                    candidates.append(Path(out.stdout.strip()))

        def version(initdb: str) -> tuple[int, ...]:  # /usr/lib/postgresql/<version>/bin/initdb
            v = Path(initdb).parent.parent.name
            return tuple(int(x) for x in v.split(".") if x.isdigit()) or (0,)

        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
        candidates += [Path(p).parent for p in debian]
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
            candidates.append(Path(on_path).parent)
        for d in candidates:
            if all((d / b).is_file() and os.access(d / b, os.X_OK) for b in need):
                return d
        raise ServicesError("the PostgreSQL server (initdb, postgres, pg_ctl) was not found: install the "
                            "Debian package `postgresql` (apt-get install postgresql, or make sysdeps)")

    def _pg_user(self) -> pwd.struct_passwd | None:
        """The system user the cluster runs as when we are root (None: as ourselves)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError as e:
            raise ServicesError(f"PostgreSQL refuses to run as root and there is no `{PG_SYSTEM_USER}` user: "
                                "install the Debian package `postgresql` (it creates that user)") from e

    def _as_pg(self) -> dict[str, Any]:
        """Popen keywords that run a command as the cluster's owner."""
        user = self._pg_user()
        if user is None:
            return {}
        return {"user": user.pw_uid, "group": user.pw_gid,
                "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid)}

    def _pg_root(self, state: dict) -> Path:
        """Where the cluster lives: ``<state>/pg``, or (as root, when the postgres user cannot reach the
        state directory, or when the socket path would be too long) a directory of its own in the
        system temp dir. Chosen once, recorded in the state file."""
        if state.get("pg_root"):
            return Path(state["pg_root"])
        user = self._pg_user()
        root = self.state_dir / "pg"
        sock = root / "run" / f".s.PGSQL.{state['ports']['postgres']}"
        reason = ""
        if user is not None and not _traversable(self.state_dir, user):
            reason = f"the `{user.pw_name}` user cannot reach {self.state_dir}"
        elif len(str(sock)) > _SOCKET_PATH_MAX:
            reason = f"the socket path {sock} would be too long"
        if reason:
            digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
            root = Path(tempfile.gettempdir()).resolve() / f"chintox-pg-{digest}"
            log.info("PostgreSQL cluster in %s: %s", root, reason)
            if os.path.lexists(root):
                self._discard_stale_cluster(root)
        state["pg_root"] = str(root)
        self._write_state(state)
        return root

    def _discard_stale_cluster(self, root: Path) -> None:
        """A cluster in the temp dir that no state file names: left by an earlier state directory of the
        same path (since deleted, and its passwords with it). Removed, unless a server still runs on it
        or it is not a directory of the cluster's owner."""
        import psutil

        user = self._pg_user()
        uid = user.pw_uid if user else os.geteuid()
        st = os.lstat(root)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            raise ServicesError(f"{root} exists and is not a directory owned by uid {uid}: remove it "
                                "(it is not this stack's)")
        with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
            pid = int((root / "data" / "postmaster.pid").read_text().split()[0])
            if "postgres" in psutil.Process(pid).name():
                raise ServicesError(f"a PostgreSQL server (pid {pid}) still runs on {root / 'data'}, left "
                                    f"by an earlier {self.state_dir}: stop it (pg_ctl stop -D "
                                    f"{root / 'data'}) and start again")
        log.warning("removing %s: a cluster of an earlier %s, whose passwords are gone", root, self.state_dir)
        shutil.rmtree(root)

    def _pg_dirs(self, root: Path) -> None:
        """``root``, ``root/data`` (0700) and ``root/run`` owned by the cluster's owner; a directory in a
        shared temp dir must be a real directory already owned by that user (never a link)."""
        user = self._pg_user()
        uid = user.pw_uid if user else os.geteuid()
        gid = user.pw_gid if user else os.getegid()
        try:
            root.mkdir(mode=0o700)
            os.chown(root, uid, gid)
        except FileExistsError:
            st = os.lstat(root)
            if not stat.S_ISDIR(st.st_mode) or (st.st_uid != uid and root.parent != self.state_dir):
                raise ServicesError(f"{root} exists and is not a directory owned by uid {uid}: "
                                    "remove it (it is not this stack's)") from None
            if st.st_uid != uid:
                os.chown(root, uid, gid)
        for sub in ("data", "run"):
            d = root / sub
            d.mkdir(mode=0o700, exist_ok=True)
            if os.lstat(d).st_uid != uid:
                os.chown(d, uid, gid)
            os.chmod(d, 0o700)

    def _start_postgres(self, state: dict) -> None:
        bindir = self._pg_bindir()
        port = state["ports"]["postgres"]
        root = self._pg_root(state)
        self._pg_dirs(root)
        data = root / "data"
        pw = self._secrets()
        as_pg = self._as_pg()
        user = self._pg_user()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C", "LANG": "C"})
        if user is not None:
            env.update({"HOME": str(root), "USER": user.pw_name, "LOGNAME": user.pw_name})
        if not (data / "PG_VERSION").exists():
            if any(data.iterdir()):  # an initdb cut short: the folder is ours and half made
                log.info("removing the half-made cluster in %s", data)
                shutil.rmtree(data)
                self._pg_dirs(root)
            if state.get("pg_initialized"):
                log.warning("the PostgreSQL cluster in %s is gone (a temp dir cleaned at boot?): a new, "
                            "empty one is made; what MLflow and Prefect had stored there is lost", data)
            log.info("initdb %s", data)
            pwfile = root / ".pwfile"
            _write_private(pwfile, pw["pg_superuser_password"] + "\n")
            if user is not None:
                os.chown(pwfile, user.pw_uid, user.pw_gid)
            try:
                with self._open_log("postgres") as fh:
                    r = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", PG_SUPERUSER,
                                        f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                                        "--locale=C"], check=False, cwd=root, env=env,
                                       stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                       timeout=300, **as_pg)
            finally:
                pwfile.unlink(missing_ok=True)
            if r.returncode != 0:
                raise ServicesError(f"initdb failed (code {r.returncode}); last lines of "
                                    f"{self.log_path('postgres')}:\n{_tail(self.log_path('postgres'))}")
        cmd = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root / "run"),
               "-c", f"listen_addresses={HOST}", "-c", "logging_collector=off"]
        p = self._launch("postgres", cmd, env, root, state, **as_pg)

        def ready() -> bool:
            import psycopg

            try:
                with psycopg.connect(host=HOST, port=port, user=PG_SUPERUSER, dbname="postgres",
                                     password=pw["pg_superuser_password"], connect_timeout=3):
                    return True
            except psycopg.OperationalError as e:
                if "password authentication failed" in str(e):
                    raise ServicesError(
                        f"the PostgreSQL cluster in {data} does not take the password in "
                        f"{self.state_dir / 'secrets.json'} (made by another state directory?): stop it and "
                        "remove both to start afresh") from e
                return False

        try:
            self._await("postgres", ready, p, f"accepting connections on {HOST}:{port}", state)
        except ServicesError:
            if self._proc(state["processes"].get("postgres")) is not None:
                self._terminate("postgres", state)
            raise
        self._pg_bootstrap(port, pw)
        state["pg_initialized"] = True
        self._write_state(state)
        log.info("postgres up: %s", self.url("postgres"))

    def _pg_bootstrap(self, port: int, pw: dict[str, str]) -> None:
        """Role ``chintox`` (its password as recorded) and its databases; idempotent."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(host=HOST, port=port, user=PG_SUPERUSER, dbname="postgres",
                             password=pw["pg_superuser_password"], autocommit=True) as conn:
            role = sql.Identifier(PG_ROLE)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PG_ROLE,)).fetchone()
            verb = sql.SQL("ALTER ROLE") if exists else sql.SQL("CREATE ROLE")
            password = sql.Literal(pw["pg_password"])
            conn.execute(sql.SQL("{} {} LOGIN PASSWORD {}").format(verb, role, password))
            for db in PG_DATABASES:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), role))

    # ---- mlflow, prefect
    def _client_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_BACKEND_STORE_URI",
                  "MLFLOW_DEFAULT_ARTIFACT_ROOT", "PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
            env.pop(k, None)
        return env

    def _launch_mlflow(self, state: dict):
        port = state["ports"]["mlflow"]
        cmd, env = mlflow_server(self.pg_url("mlflow", driver="psycopg"), self.mlflow_artifacts_dir, port,
                                 self._client_env())
        p = self._launch("mlflow", cmd, env, self.state_dir, state)
        return p, lambda: http_ok(f"http://{HOST}:{port}/health"), f"answering http://{HOST}:{port}/health"

    def _launch_prefect(self, state: dict):
        port = state["ports"]["prefect"]
        self.prefect_home.mkdir(parents=True, exist_ok=True)
        env = self._client_env()
        env.update({"PREFECT_HOME": str(self.prefect_home),
                    "PREFECT_API_DATABASE_CONNECTION_URL": self.pg_url("prefect", driver="asyncpg"),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        log.info("starting prefect on %s:%s (up to a minute or two on a busy machine)", HOST, port)
        cmd = [_own_bin("prefect", "prefect"), "server", "start", "--host", HOST, "--port", str(port)]
        p = self._launch("prefect", cmd, env, self.state_dir, state)
        health = f"http://{HOST}:{port}/api/health"
        return p, lambda: http_ok(health), f"answering {health}"

    # ---- sshd
    def _sshd_bin(self) -> str:
        for c in ("/usr/sbin/sshd", shutil.which("sshd")):
            if c and os.access(c, os.X_OK):
                return str(Path(c).resolve())  # sshd re-executes itself: an absolute path
        raise ServicesError("the SSH server (sshd) was not found: install the Debian package "
                            "`openssh-server`")

    def _ssh_keygen(self, path: Path, comment: str) -> None:
        if path.exists():
            return
        keygen = shutil.which("ssh-keygen")
        if not keygen:
            raise ServicesError("ssh-keygen was not found: install the Debian package `openssh-server` "
                                "(with openssh-client)")
        r = subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                           check=False, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise ServicesError(f"ssh-keygen failed: {r.stderr.strip()}")

    def _ssh_use_pam(self) -> bool:
        """``UsePAM no`` (PAM sessions often fail in containers), except where sshd would then refuse the
        login: as root, for an account whose password is locked (``!`` in /etc/shadow)."""
        if os.geteuid() != 0:
            return False
        with contextlib.suppress(OSError):
            for line in Path("/etc/shadow").read_text().splitlines():
                fields = line.split(":")
                if fields[0] == self.ssh_user and len(fields) > 1:
                    return fields[1].startswith("!")
        return False

    def _launch_sshd(self, state: dict):
        sshd = self._sshd_bin()
        port = state["ports"]["sshd"]
        d = self.ssh_dir
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        self.dvc_remote_dir.mkdir(parents=True, exist_ok=True)
        host_key = d / "ssh_host_ed25519_key"
        self._ssh_keygen(host_key, "chintox-services-host")
        self._ssh_keygen(self.ssh_keyfile, f"chintox-services-{self.ssh_user}")
        pub = self.ssh_keyfile.with_suffix(".pub").read_text().strip()
        _write_private(d / "authorized_keys", pub + "\n")
        host_pub = host_key.with_suffix(".pub").read_text().split()
        (self.ssh_known_hosts).write_text(f"[{HOST}]:{port} {host_pub[0]} {host_pub[1]}\n")
        if os.geteuid() == 0:  # the privilege-separation directory
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        config = "\n".join([
            "# written by chintox services; regenerated at each start",
            f"ListenAddress {HOST}",
            f"Port {port}",
            f"HostKey {host_key}",
            f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            f"AllowUsers {self.ssh_user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            f"UsePAM {'yes' if self._ssh_use_pam() else 'no'}",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
            "",
        ])
        (d / "sshd_config").write_text(config)
        test = subprocess.run([sshd, "-t", "-f", str(d / "sshd_config")], check=False, capture_output=True,
                              text=True, timeout=30)
        if test.returncode != 0:
            raise ServicesError(f"sshd rejects {d / 'sshd_config'}: {test.stderr.strip()}")
        p = self._launch("sshd", [sshd, "-D", "-e", "-f", str(d / "sshd_config")], dict(os.environ),
                         self.state_dir, state)

        def ready() -> bool:
            try:
                with socket.create_connection((HOST, port), timeout=3) as s:
                    return s.recv(64).startswith(b"SSH-")
            except OSError:
                return False

        return p, ready, f"greeting on {HOST}:{port}"

    # ---------------------------------------------------------------- stop
    def stop(self, names: Iterable[str] | None = None) -> None:
        """Stop the named services (default: all; those that need PostgreSQL before it). Only the
        processes recorded by ``start`` are signalled: SIGTERM (PostgreSQL: ``pg_ctl stop -m fast``) to
        the process group and the descendants, then SIGKILL after ``stop_timeout`` seconds."""
        names = list(SERVICES) if names is None else list(names)
        self._check_names(names)
        with self._locked():
            state = self._read_state()
            for n in ("prefect", "mlflow", "sshd", "postgres"):
                if n in names and n in state["processes"]:
                    self._terminate(n, state)

    def purge(self) -> None:
        """Stop everything, then delete all its data: the state directory and the cluster (also where it
        lives outside it, in the temp dir)."""
        self.stop()
        pg_root = self._read_state().get("pg_root")
        if pg_root and not Path(pg_root).is_relative_to(self.state_dir) and Path(pg_root).is_dir():
            shutil.rmtree(pg_root)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _group_leftovers(self, rec: dict) -> list:
        """Processes still in the group of a leader that is gone or a zombie (the group id cannot be
        reused while they live, and each was created after the leader)."""
        import psutil

        with contextlib.suppress(psutil.Error):
            if abs(psutil.Process(rec["pid"]).create_time() - rec["create_time"]) > 0.05:
                return []  # the leader's PID is someone else's now: so is any group of that id
        out = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == rec["pid"] and p.create_time() >= rec["create_time"] - 0.05:
                    out.append(p)
            except (psutil.Error, OSError):
                continue
        return out

    def _terminate(self, name: str, state: dict) -> None:
        import psutil

        rec = state["processes"].get(name)
        if not rec:
            return
        leader = self._proc(rec)
        if leader is not None:
            try:
                procs = [leader, *leader.children(recursive=True)]
            except psutil.Error:
                procs = [leader]
        else:
            procs = self._group_leftovers(rec)
        if procs:
            log.info("stopping %s (pid %s)", name, rec["pid"])
            graceful = False
            if name == "postgres" and leader is not None:
                graceful = self._pg_ctl_stop(state)
            if not graceful:
                self._signal(rec, procs, signal.SIGTERM)
            alive = _wait_gone(procs, self.stop_timeout)
            if alive:
                log.warning("%s: %d process(es) still there after %.0f s: SIGKILL", name, len(alive),
                            self.stop_timeout)
                self._signal(rec, alive, signal.SIGKILL)
                _wait_gone(alive, 10)
        p = self._popen.pop(name, None)
        if p is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=1)
        del state["processes"][name]
        self._write_state(state)

    @staticmethod
    def _signal(rec: dict, procs: list, sig: int) -> None:
        import psutil

        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec["pid"], sig)  # the session start() made: its id is the leader's PID
        for p in procs:  # descendants that left the group (sshd's per-connection children do)
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)

    def _pg_ctl_stop(self, state: dict) -> bool:
        """``pg_ctl stop -m fast`` as the cluster's owner; False where that did not work."""
        try:
            bindir = self._pg_bindir()
        except ServicesError:
            return False
        data = Path(state.get("pg_root") or self.state_dir / "pg") / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        try:
            r = subprocess.run([str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w",
                                "-t", str(int(self.stop_timeout))], check=False, cwd=data.parent, env=env,
                               capture_output=True, text=True, timeout=self.stop_timeout + 10,
                               **self._as_pg())
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("pg_ctl stop: %s", e)
            return False
        if r.returncode != 0:
            log.warning("pg_ctl stop failed: %s", (r.stderr or r.stdout).strip())
        return r.returncode == 0


__all__ = ["DEFAULT_PORTS", "PORT_ENV", "SERVICES", "STATE_DIR_ENV", "Services", "ServicesError", "free_port",
           "http_ok", "mlflow_server"]
