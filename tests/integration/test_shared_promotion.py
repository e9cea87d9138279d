"""Promotions serialised across machines: two promoters in two directories that share no file (own
working directory, HOME and TMPDIR), against the shared stack (MLflow and Prefect on PostgreSQL), are
held by the Prefect global concurrency limit that the registry's promotion lock is, then run one after
the other: the aliases stay consistent and both decisions are recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from integ_util import REPO, base_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

sys.path.insert(0, str(REPO / "tests" / "unit" / "registry"))

import microdet
from reg_util import make_version as _make_version


def make_version(cfg, metrics, alias="challenger"):
    return _make_version(cfg, metrics, alias=alias, on_server=True)


# One promoter "machine": its own directory as working directory, HOME and TMPDIR; the registry and
# the Prefect server come from the environment (MLFLOW_TRACKING_URI, PREFECT_API_URL).
_PROMOTER = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, {regdir!r})
import microdet
from tasks.promote import run_promote

cfg = microdet.micro_config(Path.cwd())
r = run_promote(cfg, version=sys.argv[1])
print(json.dumps({{"decision": r["decision"], "version": r["version"], "compared_to": r["compared_to"],
                  "serialised_by": r["serialised_by"]}}))
"""


@pytest.fixture
def stack(tmp_path):
    from chintox.services import Services

    s = Services(tmp_path / "stack", pg_port=0, mlflow_port=0, prefect_port=0, ssh_port=0)
    try:
        s.start(["postgres", "mlflow", "prefect"])
        yield s
    finally:
        s.purge()  # stop, and remove the cluster (it may live in the temp dir, see chintox.services)


def _machine(root: Path, stack) -> dict[str, str]:
    for d in ("home", "tmp"):
        (root / d).mkdir(parents=True)
    env = base_env(root)
    env.update(stack.env())
    env.update({"HOME": str(root / "home"), "TMPDIR": str(root / "tmp"),
                "PREFECT_HOME": str(root / "home" / ".prefect"), "CHINTOX_MLFLOW_BACKOFF_S": "0.5"})
    return env


def test_two_machines_promote_one_at_a_time(stack, tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    for k, v in stack.env().items():
        monkeypatch.setenv(k, v)
    # Prefect reads its settings once, at import: this process is pointed at the shared server here
    with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url}):
        _promote_on_two_machines(stack, tmp_path, monkeypatch)


def _promote_on_two_machines(stack, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from prefect.concurrency.sync import concurrency

    from chintox.locking import ensure_limit, limit_name
    from tasks.promote import HISTORY_TAG, run_promote

    monkeypatch.setenv("TMPDIR", str(tmp_path / "tester-tmp"))
    (tmp_path / "tester-tmp").mkdir()
    cfg = microdet.micro_config(tmp_path / "tester")
    name = cfg.mlflow.registered_model
    v1 = make_version(cfg, microdet.default_metrics(0.70, 0.65))
    first_promotion = run_promote(cfg)
    assert first_promotion["decision"] == "promoted"
    assert first_promotion["serialised_by"].startswith(f"prefect:{limit_name(name)}@{stack.prefect_api_url}")
    v2 = make_version(cfg, microdet.default_metrics(0.72, 0.65), alias=None)
    v3 = make_version(cfg, microdet.default_metrics(0.74, 0.65), alias=None)

    code = _PROMOTER.format(regdir=str(REPO / "tests" / "unit" / "registry"))
    machines = {v: tmp_path / f"machine-{v}" for v in (v2, v3)}
    envs = {v: _machine(root, stack) for v, root in machines.items()}
    ensure_limit(limit_name(name))
    with concurrency(limit_name(name), occupy=1, strict=True):  # this test holds the one slot ...
        procs = {v: subprocess.Popen([sys.executable, "-c", code, v], cwd=machines[v], env=envs[v],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for v in (v2, v3)}
        time.sleep(20)  # ... so neither promoter may decide anything meanwhile
        running = {v: p.poll() is None for v, p in procs.items()}
        c = MlflowClient()
        untouched = {v: "promotion.decision" not in c.get_model_version(name, v).tags for v in (v2, v3)}
        champion_meanwhile = str(c.get_model_version_by_alias(name, "champion").version)
    assert running == {v2: True, v3: True}, {v: p.communicate() for v, p in procs.items() if p.poll() is not None}
    assert untouched == {v2: True, v3: True} and champion_meanwhile == v1

    outs = {}
    for v, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs[v] = json.loads(out.strip().splitlines()[-1])
    assert all(o["serialised_by"].startswith("prefect:") for o in outs.values()), outs
    # one after the other: exactly one compared with v1, the other with that one's result
    first = [v for v, o in outs.items() if o["compared_to"] == v1]
    assert len(first) == 1, f"both compared with champion {v1}: the promotions overlapped ({outs})"
    first = first[0]
    second = v3 if first == v2 else v2
    assert outs[first]["decision"] == "promoted" and outs[second]["compared_to"] == first, outs
    assert outs[second]["decision"] == ("promoted" if second == v3 else "rejected"), outs
    c = MlflowClient()
    for v in (v2, v3):  # both decisions recorded on the versions
        tags = c.get_model_version(name, v).tags
        assert tags["promotion.decision"] == outs[v]["decision"]
        assert json.loads(tags["promotion.history"])[-1]["decision"] == outs[v]["decision"]
    history = json.loads(c.get_registered_model(name).tags[HISTORY_TAG])
    assert history == [v1, first] + ([second] if outs[second]["decision"] == "promoted" else [])
    assert str(c.get_model_version_by_alias(name, "champion").version) == history[-1]
    for root in machines.values():  # nothing a promoter wrote is a lock file they could have shared
        assert not [p for p in root.rglob("*.lock")], list(root.rglob("*.lock"))
    assert os.environ["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
