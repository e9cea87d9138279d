"""The feedback holdout in registration and in the promotion gate: a challenger trained on moderators'
feedback must beat the champion on the feedback it was not trained on."""

from __future__ import annotations

import json
from pathlib import Path

import microdet
import pytest

SETS = ["cold_test", "toxicn_test"]
OLD = {"toxicn_test.f1": 0.70, "cold_test.accuracy": 0.65}


@pytest.fixture
def cfg(tmp_path):
    return microdet.micro_config(tmp_path)


def _figures(candidate, champion, rows=8):
    return {"set": "feedback_holdout", "sha256": "ab" * 32, "rows": rows, "metric": "accuracy",
            "candidate": candidate, "champion": champion}


# ------------------------------------------------------------------------------------------ pure
def test_feedback_rule_rejects_worse_equal_empty_accepts_better(cfg):
    from tasks.promote import gate

    worse = gate(cfg, OLD, OLD, SETS, SETS, feedback=_figures(0.41, 0.45))
    assert not worse["passed"]
    assert ("feedback holdout (8 rows): accuracy 0.410 does not beat the champion's 0.450 by more than 0.0: FAIL"
            in worse["reasons"]), worse
    fb = worse["comparison"]["feedback_holdout"]
    assert fb == {**_figures(0.41, 0.45), "delta": pytest.approx(-0.04), "min_gain": 0.0}
    equal = gate(cfg, OLD, OLD, SETS, SETS, feedback=_figures(0.45, 0.45))
    assert not equal["passed"] and "does not beat the champion's 0.450" in " ".join(equal["reasons"])
    better = gate(cfg, OLD, OLD, SETS, SETS, feedback=_figures(0.50, 0.45))
    assert better["passed"], better
    assert any(r.startswith("feedback holdout (8 rows): accuracy 0.500 beats") and r.endswith("ok")
               for r in better["reasons"])
    assert better["comparison"]["feedback_holdout"]["delta"] == pytest.approx(0.05)
    empty = gate(cfg, OLD, OLD, SETS, SETS, feedback=_figures(None, None, rows=0))
    assert not empty["passed"] and "feedback holdout (0 rows" in " ".join(empty["reasons"])
    assert "is empty" in " ".join(empty["reasons"])
    # the other rules still hold: a better feedback score does not excuse a fall in ToxiCN F1
    f1_down = gate(cfg, {**OLD, "toxicn_test.f1": 0.60}, OLD, SETS, SETS, feedback=_figures(0.9, 0.45))
    assert not f1_down["passed"]
    # no champion: nothing to compare with (first promotion)
    first = gate(cfg, OLD, None, SETS, None, feedback=_figures(0.41, 0.45))
    assert first["passed"] and "feedback_holdout" not in first["comparison"]


def test_feedback_min_gain_and_figures(tmp_path):
    from tasks.promote import feedback_figures, gate

    cfg = microdet.micro_config(tmp_path, **{"promote.feedback_min_gain": 0.1, "promote.feedback_metric": "f1"})
    g = gate(cfg, OLD, OLD, SETS, SETS, feedback=_figures(0.54, 0.45))
    assert not g["passed"] and "by more than 0.1" in " ".join(g["reasons"])
    # each detector labels at its own threshold: the same scores, two thresholds
    labels, scores = [1, 1, 0, 0], [0.9, 0.6, 0.4, 0.1]
    f = feedback_figures(labels, scores, scores, 0.5, 0.95, "accuracy", "s")
    assert (f["rows"], f["candidate"], f["champion"]) == (4, 1.0, 0.5)
    assert feedback_figures(labels, scores, scores, 0.5, 0.95, "f1", "s")["champion"] == 0.0
    assert feedback_figures([], [], [], 0.5, 0.5, "accuracy", "s")["candidate"] is None


# ------------------------------------------------------------------------------- with MLflow
def _holdout(cfg, labels) -> tuple[Path, str]:
    """``<data.out_dir>/feedback/holdout.jsonl`` with the micro texts and ``labels``; (path, sha256)."""
    from chintox.feedback import HOLDOUT_FILE, sets_path, text_key, write_jsonl

    rows = [{"id": f"h{i}", "text": t, "label": int(y), "source": "feedback", "split": "holdout",
             "text_key": text_key(t), "corrections": 1} for i, (t, y) in enumerate(zip(microdet.TEXTS, labels))]
    path = sets_path(cfg.data.out_dir, HOLDOUT_FILE)
    return path, write_jsonl(path, rows)


def _detector(cfg, threshold: float, note: str, holdout_sha: str | None = None) -> None:
    """The micro detector in ``<models>/stage2`` with another threshold (a new 'training' result), trained
    on feedback when ``holdout_sha`` is given; its evaluation metrics rewritten for it."""
    from chintox.card import LINEAGE_FEEDBACK_HOLDOUT, LINEAGE_FEEDBACK_TRAIN, DetectorCard

    d = Path(cfg.paths.models) / "stage2"
    card = DetectorCard.read(d)
    lineage = {k: v for k, v in card.lineage.items() if not k.startswith("data.feedback")}
    if holdout_sha:
        lineage.update({LINEAGE_FEEDBACK_HOLDOUT: holdout_sha, LINEAGE_FEEDBACK_TRAIN: "cd" * 32})
    DetectorCard(**{**card.to_dict(), "threshold": threshold, "config_hash": note, "lineage": lineage}).write(d)
    microdet.write_metrics(cfg)


def _scores(cfg) -> list[float]:
    from chintox.detector import Detector

    det = Detector(Path(cfg.paths.models) / "stage2", backend="hf", device=cfg.evaluate.device,
                   batch_size=cfg.evaluate.batch_size)
    try:
        return det.scores(microdet.TEXTS)
    finally:
        det.close()


def test_register_refuses_a_holdout_the_card_does_not_name_and_an_empty_one_fails(reg_cfg, tmp_path):
    from reg_util import make_version

    from tasks.promote import run_promote
    from tasks.register import RegistrationError, run_register

    path, sha = _holdout(reg_cfg, [1, 0] * 4)
    _detector(reg_cfg, 0.5, "fb", holdout_sha=sha)
    other = tmp_path / "other.jsonl"
    other.write_text(path.read_text(encoding="utf-8") + '{"id": "x", "text": "多", "label": 1}\n', encoding="utf-8")
    from chintox.provenance import file_sha256

    with pytest.raises(RegistrationError) as ei:
        run_register(reg_cfg, feedback_holdout=other)
    msg = str(ei.value)
    assert sha in msg and file_sha256(other) in msg and "dvc checkout" in msg and "feedback_holdout=" in msg
    path.unlink()
    with pytest.raises(RegistrationError, match="trained on feedback.*no file at.*dvc checkout"):
        run_register(reg_cfg)
    # an empty holdout registers (0 rows), but the gate cannot promote it over a champion
    path, sha = _holdout(reg_cfg, [])
    _detector(reg_cfg, 0.5, "fb-empty", holdout_sha=sha)
    make_version(reg_cfg, alias=None)
    assert run_promote(reg_cfg, version="1")["decision"] == "promoted"
    assert run_register(reg_cfg)["version"] == "2"
    r = run_promote(reg_cfg)
    assert r["decision"] == "rejected" and r["gate"]["comparison"]["feedback_holdout"]["rows"] == 0
    assert "feedback holdout (0 rows" in " ".join(r["gate"]["reasons"])


def test_promote_feedback_challenger_rejected_then_better_promoted(reg_cfg, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from chintox.provenance import file_sha256
    from tasks.promote import PromotionError, run_promote
    from tasks.register import run_register

    name = reg_cfg.mlflow.registered_model
    s = sorted(_scores(reg_cfg))
    assert len(set(s)) == len(s), s  # the micro detector tells the 8 texts apart
    cut = s[5]
    labels = [int(x >= cut) for x in _scores(reg_cfg)]  # the 3 highest-scored texts are toxic
    path, sha = _holdout(reg_cfg, labels)
    # v1, the champion: not trained on feedback; its threshold calls 4 toxic (1 error: accuracy 7/8)
    _detector(reg_cfg, (s[3] + s[4]) / 2, "champion")
    v1 = run_register(reg_cfg)["version"]
    assert run_promote(reg_cfg)["decision"] == "promoted"
    c = MlflowClient()
    assert not any(k.startswith("feedback.") for k in c.get_model_version(name, v1).tags)
    # v2: trained on feedback, but its threshold calls nothing toxic (accuracy 5/8): worse
    _detector(reg_cfg, 2.0, "worse", holdout_sha=sha)
    named_otherwise = tmp_path / "holdout-from-dvc.jsonl"
    named_otherwise.write_bytes(path.read_bytes())
    r2 = run_register(reg_cfg, feedback_holdout=named_otherwise)
    v2 = r2["version"]
    t = c.get_model_version(name, v2).tags
    assert (t["feedback.trained"], t["feedback.holdout_sha256"], t["feedback.holdout_rows"]) == ("true", sha, "8")
    assert t["data.feedback_holdout"] == sha  # the card's lineage
    got = mlflow.artifacts.download_artifacts(run_id=r2["run_id"], artifact_path="feedback/holdout.jsonl",
                                              dst_path=str(tmp_path / "dl"))
    assert file_sha256(got) == sha
    r = run_promote(reg_cfg)
    assert r["decision"] == "rejected" and not r["promoted"], r
    fb = r["gate"]["comparison"]["feedback_holdout"]
    assert fb == {"set": "feedback_holdout", "sha256": sha, "rows": 8, "metric": "accuracy",
                  "candidate": 0.625, "champion": 0.875, "delta": -0.25, "min_gain": 0.0}
    reason = "feedback holdout (8 rows): accuracy 0.625 does not beat the champion's 0.875 by more than 0.0: FAIL"
    assert reason in r["gate"]["reasons"]
    t = c.get_model_version(name, v2).tags
    assert t["promotion.decision"] == "rejected" and t["promotion.gate"] == "fail"
    assert reason in t["promotion.reasons"]
    assert json.loads(t["promotion.metrics"])["feedback_holdout"] == fb
    assert json.loads(t["promotion.feedback_holdout"]) == fb
    assert json.loads(t["promotion.history"])[-1]["feedback_holdout"]["delta"] == -0.25
    assert str(c.get_model_version_by_alias(name, "champion").version) == v1
    # a holdout on the run that is not the one registered is refused, not scored
    c.set_model_version_tag(name, v2, "feedback.holdout_sha256", "0" * 64)
    with pytest.raises(PromotionError, match="not the one it was registered with"):
        run_promote(reg_cfg, version=v2)
    # v3: trained on feedback and right on every held-out row: promoted over v1
    _detector(reg_cfg, (s[4] + s[5]) / 2, "better", holdout_sha=sha)
    v3 = run_register(reg_cfg)["version"]
    r = run_promote(reg_cfg)
    assert r["decision"] == "promoted" and r["champion"] == v3, r
    assert r["gate"]["comparison"]["feedback_holdout"]["candidate"] == 1.0
    t = c.get_model_version(name, v3).tags
    assert json.loads(t["promotion.feedback_holdout"])["delta"] == 0.125
