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


# A promoter process with two hooks that force the two promotions to overlap: it announces when it
# asks for the lock (``want-<v>``) and when it is inside the critical section, champion already read
# (``in-<v>``, from the gate). Inside, it stays until the other promoter is inside too (no lock:
# both compare with the same champion, which the test then sees), or, when the other has asked for
# the lock, for HOLD_S more seconds (with the lock it is blocked there; without one it would be in).
_PROMOTER = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, {regdir!r})
import microdet
import tasks.promote as promote

me, other, root = sys.argv[1], sys.argv[2], Path({root!r})
HOLD_S, GIVE_UP_S = {hold_s!r}, 180.0
cfg = microdet.micro_config(root)
real_lock, real_gate = promote._lock, promote.gate


def lock(cfg):
    (root / f"want-{{me}}").touch()
    return real_lock(cfg)


def gate(*args, **kwargs):
    (root / f"in-{{me}}").touch()
    t0, held_since = time.monotonic(), None
    while not (root / f"in-{{other}}").exists() and time.monotonic() - t0 < GIVE_UP_S:
        if (root / f"want-{{other}}").exists():
            held_since = held_since or time.monotonic()
            if time.monotonic() - held_since > HOLD_S:
                break
        time.sleep(0.01)
    return real_gate(*args, **kwargs)


promote._lock, promote.gate = lock, gate
(root / f"ready-{{me}}").touch()
while not (root / "go").exists():
    time.sleep(0.01)
r = promote.run_promote(cfg, version=me)
print(json.dumps({{"decision": r["decision"], "version": r["version"]}}))
"""


def test_two_concurrent_promotions_are_serialised(cfg, tmp_path):
    """Both promoters are forced into the critical section at once (see _PROMOTER): with the lock the
    second waits and is compared with the first's result; without it both compare with v1."""
    import time

    from mlflow import MlflowClient

    from tasks.promote import HISTORY_TAG, run_promote

    name = cfg.mlflow.registered_model
    v1 = make_version(cfg, microdet.default_metrics(0.70, 0.65))
    run_promote(cfg)
    v2 = make_version(cfg, microdet.default_metrics(0.72, 0.65), alias=None)
    v3 = make_version(cfg, microdet.default_metrics(0.74, 0.65), alias=None)
    code = _PROMOTER.format(regdir=str(Path(__file__).parent), root=str(tmp_path), hold_s=10.0)
    procs = [subprocess.Popen([sys.executable, "-c", code, me, other], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for me, other in ((v2, v3), (v3, v2))]
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready-{v}").exists() for v in (v2, v3)):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "promoters not ready in time"
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outs = {}
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        o = json.loads(out.strip().splitlines()[-1])
        outs[o["version"]] = o["decision"]
    assert all((tmp_path / f"in-{v}").exists() for v in (v2, v3))  # the hooks ran in both
    c = MlflowClient()
    compared = {v: c.get_model_version(name, v).tags["promotion.compared_to"] for v in (v2, v3)}
    for v in (v2, v3):
        assert c.get_model_version(name, v).tags["promotion.decision"] == outs[v]
    # serialised: exactly one promoter saw v1 as champion; the other saw that one's result
    first = [v for v in (v2, v3) if compared[v] == v1]
    assert len(first) == 1, f"both compared with champion {v1}: the promotions overlapped ({compared})"
    first = first[0]
    second = v3 if first == v2 else v2
    assert outs[first] == "promoted" and compared[second] == first, (outs, compared)
    # the gate against the first's result: v3 (F1 0.74) beats v2 (0.72); v2 loses to v3
    assert outs[second] == ("promoted" if second == v3 else "rejected"), (outs, compared)
    history = json.loads(c.get_registered_model(name).tags[HISTORY_TAG])
    assert history == [v1, first] + ([second] if outs[second] == "promoted" else [])
    assert str(c.get_model_version_by_alias(name, "champion").version) == history[-1]
