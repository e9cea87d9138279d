"""Gated promotion: pass, fail, force, rollback (repeatable), different sets, concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import microdet
import pytest
from reg_util import make_version

REPO = Path(__file__).resolve().parents[3]


def _champion(cfg):
    from mlflow import MlflowClient

    return MlflowClient().get_model_version_by_alias(cfg.mlflow.registered_model, "champion").version



@pytest.fixture
def cfg(tmp_path):
    return microdet.micro_config(tmp_path)


def test_gate_rules(cfg):
    from tasks.promote import gate

    sets = ["cold_test", "toxicn_test"]
    old = {"toxicn_test.f1": 0.70, "cold_test.accuracy": 0.65}
    ok = gate(cfg, {"toxicn_test.f1": 0.70, "cold_test.accuracy": 0.645}, old, sets, sets)
    assert ok["passed"], ok  # COLD within the 0.01 tolerance, F1 equal
    f1_down = gate(cfg, {"toxicn_test.f1": 0.69, "cold_test.accuracy": 0.70}, old, sets, sets)
    assert not f1_down["passed"] and any("FAIL" in r and "f1" in r for r in f1_down["reasons"])
    cold_down = gate(cfg, {"toxicn_test.f1": 0.75, "cold_test.accuracy": 0.63}, old, sets, sets)
    assert not cold_down["passed"]
    differ = gate(cfg, old, old, ["toxicn_test"], sets)
    assert not differ["passed"] and "differ" in " ".join(differ["reasons"])
    data_differ = gate(cfg, old, old, sets, sets, {"cold_test": "a"}, {"cold_test": "b"})
    assert not data_differ["passed"] and "data differ" in " ".join(data_differ["reasons"])
    first = gate(cfg, old, None, sets, None)
    assert first["passed"]
    # the real metrics.json layout: the tuned-threshold value is gated, not the default one
    from chintox.metrics import flatten_metrics

    new = flatten_metrics(microdet.default_metrics(0.70, 0.65))
    base = flatten_metrics(microdet.default_metrics(0.69, 0.65))
    r = gate(cfg, new, base, sets, sets)
    assert r["passed"] and r["comparison"]["toxicn_test.f1"]["candidate"] == 0.70


def test_promote_pass_fail_force_rollback(cfg):
    from mlflow import MlflowClient

    from tasks.promote import PromotionError, run_promote, run_rollback

    name = cfg.mlflow.registered_model
    with pytest.raises(PromotionError, match="challenger"):
        run_promote(cfg)
    v1 = make_version(cfg, microdet.default_metrics(0.70, 0.65))
    r = run_promote(cfg)
    assert r["decision"] == "promoted" and str(_champion(cfg)) == v1
    # gate passes: better F1, COLD within tolerance
    v2 = make_version(cfg, microdet.default_metrics(0.72, 0.645))
    r = run_promote(cfg)
    assert r["decision"] == "promoted" and r["previous_champion"] == v1 and str(_champion(cfg)) == v2
    c = MlflowClient()
    t = c.get_model_version(name, v2).tags
    assert t["promotion.decision"] == "promoted" and t["promotion.compared_to"] == v1
    assert json.loads(t["promotion.metrics"])["toxicn_test.f1"]["delta"] == pytest.approx(0.02)
    # challenger alias is cleared once promoted
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        c.get_model_version_by_alias(name, "challenger")
    # gate fails: F1 falls
    v3 = make_version(cfg, microdet.default_metrics(0.60, 0.80))
    r = run_promote(cfg)
    assert r["decision"] == "rejected" and not r["promoted"] and str(_champion(cfg)) == v2
    t3 = c.get_model_version(name, v3).tags
    assert t3["promotion.decision"] == "rejected" and "FAIL" in t3["promotion.reasons"]
    # force needs a reason, then overrides and records it
    with pytest.raises(PromotionError, match="reason"):
        run_promote(cfg, force=True)
    r = run_promote(cfg, version=v3, force=True, reason="COLD matters more for this release")
    assert r["decision"] == "forced" and str(_champion(cfg)) == v3
    t3 = c.get_model_version(name, v3).tags
    assert t3["promotion.decision"] == "forced" and "COLD matters" in t3["promotion.reason"]
    assert [h["decision"] for h in json.loads(t3["promotion.history"])] == ["rejected", "forced"]
    # rollback twice: v3 -> v2 -> v1, then nothing left
    r = run_rollback(cfg)
    assert r["champion"] == v2 and str(_champion(cfg)) == v2
    assert c.get_model_version(name, v3).tags["promotion.decision"] == "rolled_back"
    r = run_rollback(cfg)
    assert r["champion"] == v1 and str(_champion(cfg)) == v1
    with pytest.raises(PromotionError, match="nothing to roll back"):
        run_rollback(cfg)
    # promoting the current champion is a recorded no-op
    assert run_promote(cfg, version=v1)["decision"] == "already_champion"


def test_gate_fails_on_different_sets(cfg):
    from tasks.promote import run_promote

    make_version(cfg)
    run_promote(cfg)
    make_version(cfg, microdet.default_metrics(0.9, 0.9), sets=("toxicn_test",))
    r = run_promote(cfg)
    assert r["decision"] == "rejected" and "differ" in " ".join(r["gate"]["reasons"])


_PROMOTER = r"""
import json, sys
sys.path.insert(0, {regdir!r})
import microdet
from tasks.promote import run_promote
cfg = microdet.micro_config(__import__("pathlib").Path({root!r}))
start = __import__("pathlib").Path({root!r}) / "go"
import time
while not start.exists():
    time.sleep(0.01)
r = run_promote(cfg, version=sys.argv[1])
print(json.dumps({{"decision": r["decision"], "version": r["version"]}}))
"""


def test_two_concurrent_promotions_end_consistent(cfg, tmp_path):
    from mlflow import MlflowClient

    from tasks.promote import HISTORY_TAG

    name = cfg.mlflow.registered_model
    v1 = make_version(cfg, microdet.default_metrics(0.70, 0.65))
    from tasks.promote import run_promote

    run_promote(cfg)
    v2 = make_version(cfg, microdet.default_metrics(0.72, 0.65), alias=None)
    v3 = make_version(cfg, microdet.default_metrics(0.74, 0.65), alias=None)
    code = _PROMOTER.format(regdir=str(Path(__file__).parent), root=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code, v], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for v in (v2, v3)]
    (tmp_path / "go").touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    c = MlflowClient()
    champ = str(c.get_model_version_by_alias(name, "champion").version)
    history = json.loads(c.get_registered_model(name).tags[HISTORY_TAG])
    # serialised: both were promoted one after the other (each passed the gate against the champion
    # of its moment), or the second was rejected against the first; either way one consistent state
    promoted = [o["version"] for o in outs if o["decision"] == "promoted"]
    assert promoted, outs
    assert history[0] == v1 and history[-1] == champ
    assert history[1:] == sorted(promoted, key=history.index)
    assert champ in promoted
    for o in outs:
        t = c.get_model_version(name, o["version"]).tags
        assert t["promotion.decision"] == o["decision"]
    if len(promoted) == 2:  # the later one was compared with the earlier one, not with v1
        later = history[-1]
        assert c.get_model_version(name, later).tags["promotion.compared_to"] == history[-2]
