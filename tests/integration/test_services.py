"""`chintox services`: the shared stack (PostgreSQL, MLflow, Prefect, sshd for a DVC remote) started for
real on free ports with its state in tmp. Each client talks to its server only (MLflow artifacts through
the server's proxy, DVC over SSH), what the servers stored is read back from PostgreSQL itself, one
service is restarted on its port with its data intact, and after ``stop()`` no process that the stack
ran (nor any of their children) is left and no port still listens."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from integ_util import _api

from chintox.services import SERVICES, Services, ServicesError

pytestmark = [pytest.mark.integration]

BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------------ helpers

@pytest.fixture
def stack(tmp_path):
    """A stack on free ports (never the defaults) under tmp, stopped and removed whatever the test did
    (its cluster too, which may live in the system temp dir)."""
    svc = Services(tmp_path / "services", pg_port=0, mlflow_port=0, prefect_port=0, ssh_port=0)
    try:
        yield svc
    finally:
        pg_root = svc.pg_root
        svc.purge()
        assert not pg_root or not Path(pg_root).exists()


def _run(cmd: list, cwd: Path, env: dict | None = None) -> str:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _sql(stack: Services, database: str, query: str, *args):
    import psycopg

    with psycopg.connect(stack.pg_url(database), connect_timeout=10) as conn:
        return conn.execute(query, args).fetchall()


def _client_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               HOME=str(tmp_path / "home"))  # no ~/.ssh of the user: only the stack's key and known_hosts
    (tmp_path / "home").mkdir(exist_ok=True)
    for k in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(k, None)
    return env


# ------------------------------------------------------------------------------------------ the stack

def test_stack_serves_stores_in_postgres_restarts_and_stops_clean(stack, tmp_path):
    status = stack.start()
    assert all(status[n]["up"] and status[n]["listening"] for n in SERVICES), status
    ports = {n: status[n]["port"] for n in SERVICES}
    assert len(set(ports.values())) == 4 and not set(ports.values()) & {55432, 5000, 4200, 2222}, ports
    assert stack.start() == stack.status()  # idempotent: nothing new started
    assert json.loads((stack.state_dir / "state.json").read_text())["ports"] == ports
    assert oct((stack.state_dir / "secrets.json").stat().st_mode & 0o777) == "0o600"

    # the CLI reads the same state: what a client's shell evaluates
    env_out = _run([BIN / "chintox", "services", "env", "--state-dir", stack.state_dir], tmp_path)
    assert env_out.splitlines() == [f"export {k}={shlex.quote(v)}" for k, v in stack.env().items()]

    # MLflow: a run, an artifact through the server's proxy, a registered version with an alias
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)
    exp_id = client.create_experiment("services-test")
    assert client.get_experiment(exp_id).artifact_location.startswith("mlflow-artifacts:")
    run_id = client.create_run(exp_id).info.run_id
    note = tmp_path / "note.txt"
    note.write_text("through the proxy")
    client.log_metric(run_id, "f1", 0.5)
    client.log_artifact(run_id, str(note))
    client.set_terminated(run_id)
    stored = list(stack.mlflow_artifacts_dir.rglob("note.txt"))
    assert [p.read_text() for p in stored] == ["through the proxy"]
    back = client.download_artifacts(run_id, "note.txt", str(tmp_path))
    assert Path(back).read_text() == "through the proxy"
    client.create_registered_model("services-test-model")
    mv = client.create_model_version("services-test-model", source=client.get_run(run_id).info.artifact_uri,
                                     run_id=run_id)
    client.set_registered_model_alias("services-test-model", "champion", mv.version)
    assert client.get_model_version_by_alias("services-test-model", "champion").version == mv.version
    assert _sql(stack, "mlflow", "SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                "services-test-model") == [("champion", int(mv.version))]

    # Prefect: a flow made through the API is a row of the `prefect` database
    flow = _api(f"{stack.prefect_api_url}/flows/", "POST", {"name": "services-test-flow"})
    assert _api(f"{stack.prefect_api_url}/flows/{flow['id']}")["name"] == "services-test-flow"
    assert _sql(stack, "prefect", "SELECT name FROM flow WHERE id = %s", flow["id"]) == [
        ("services-test-flow",)]

    # DVC over SSH: push, forget, pull, in a project of its own
    env = _client_env(tmp_path)
    proj = tmp_path / "proj"
    proj.mkdir()
    _run(["git", "init", "-q"], proj, env)
    _run([BIN / "dvc", "init", "-q"], proj, env)
    (proj / "data.txt").write_text("pushed over ssh\n")
    _run([BIN / "dvc", "add", "-q", "data.txt"], proj, env)
    added = json.loads(_run([BIN / "chintox", "services", "dvc-remote", "--state-dir", stack.state_dir,
                             "--name", "shared"], proj, env))
    assert added["url"] == stack.dvc_remote_url
    assert "keyfile" in (proj / ".dvc" / "config.local").read_text()
    assert "remote =" not in (proj / ".dvc" / "config").read_text()  # not made the default
    _run([BIN / "dvc", "push", "-r", "shared"], proj, env)
    assert [p.read_text() for p in (stack.dvc_remote_dir / "files").rglob("*") if p.is_file()] == [
        "pushed over ssh\n"]
    (proj / "data.txt").unlink()
    shutil.rmtree(proj / ".dvc" / "cache")
    _run([BIN / "dvc", "pull", "-r", "shared"], proj, env)
    assert (proj / "data.txt").read_text() == "pushed over ssh\n"
    # the known_hosts file holds the real host key: strict host checking passes with it alone
    remote = stack.dvc_remote()
    assert _run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o",
                 f"UserKnownHostsFile={remote['known_hosts']}", "-i", remote["keyfile"], "-p", ports["sshd"],
                 f"{stack.ssh_user}@127.0.0.1", "echo", "ok"], tmp_path, env).strip() == "ok"

    # one service down and up again: same port, same data, the others untouched
    others = {n: p for n, p in stack.pids().items() if n != "prefect"}
    old = psutil.Process(stack.pids()["prefect"])
    stack.stop(["prefect"])
    assert not stack.is_up("prefect") and not _alive(old) and not _listening(ports["prefect"])
    assert stack.pids() == others
    stack.start(["prefect"])
    assert stack.port("prefect") == ports["prefect"] and stack.pids()["prefect"] != old.pid
    assert _api(f"{stack.prefect_api_url}/flows/{flow['id']}")["name"] == "services-test-flow"
    assert {n: p for n, p in stack.pids().items() if n != "prefect"} == others

    # stop: every process the stack ran, and their children, gone; no port listening
    procs = []
    for pid in stack.pids().values():
        leader = psutil.Process(pid)
        procs += [leader, *leader.children(recursive=True)]
    assert len(procs) > 4  # the servers' workers and PostgreSQL's backends are counted too
    stack.stop()
    left = [p for p in procs if _alive(p)]
    assert not left, [(p.pid, p.cmdline()) for p in left]
    assert not [n for n, p in ports.items() if _listening(p)]
    assert stack.pids() == {} and not any(row["up"] for row in stack.status().values())


def test_a_port_taken_by_another_program_is_named_and_nothing_starts(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        svc = Services(tmp_path / "services", pg_port=0, mlflow_port=port, prefect_port=0, ssh_port=0)
        with pytest.raises(ServicesError) as err:
            svc.start()
    msg = str(err.value)
    assert f"port {port} for mlflow" in msg and "already in use" in msg, msg
    assert svc.pids() == {}
    with pytest.raises(ServicesError, match="unknown service"):
        svc.start(["postgress"])
