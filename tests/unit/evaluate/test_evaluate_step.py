"""run_evaluate and run_table1 end to end on micro splits (hf backend; MLflow in tmp)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _eval_fixtures import STUDY_ROWS, micro_cfg_at, write_splits, write_study_table

from chintox.scoring import make_scorer
from tasks.evaluate import load_set


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, micro_model_dir, micro_detector_dir):
    import shutil

    root = tmp_path_factory.mktemp("evalws")
    write_splits(root, n=40)
    models = root / "models"
    models.mkdir()
    shutil.copytree(micro_detector_dir, models / "stage2")
    shutil.copytree(micro_model_dir, models / "base")
    write_study_table(root / "study")
    cfg = micro_cfg_at(root, **{"evaluate.backend": "hf", "evaluate.table1_backends": ["hf"],
                                "data.study_dir": str(root / "study")})
    return cfg, root


def test_run_evaluate_writes_metrics_predictions_plots_and_mlflow(workspace):
    import mlflow

    from tasks.evaluate import run_evaluate

    cfg, root = workspace
    # the study's generate-and-parse mode, run here independently of run_evaluate (greedy: repeatable)
    with make_scorer(root / "models" / "stage2", cfg, "hf", progress=False) as scorer:
        generated = {name: scorer.generate_labels([r["text"] for r in load_set(cfg, name)])[0]
                     for name in ("toxicn_test", "cold_test")}
    m = run_evaluate(cfg, generate=True)
    reports = root / "reports"
    on_disk = json.loads((reports / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    for name in ("toxicn_test", "cold_test"):
        s = m[name]
        assert s["n"] == 40 and s["threshold_tuned"] == 0.45
        assert set(s["default"]) == {"accuracy", "precision", "recall", "f1", "auc", "auc_hard"}
        assert 0 <= s["default"]["accuracy"] <= 1 and s["truncated"] == 0 and s["empty"] == 0
        gen_labels = generated[name]
        assert s["generate"]["n_unparsed"] == int((gen_labels < 0).sum())
        acc = float(np.mean(np.where(gen_labels >= 0, gen_labels, 0) == [r["label"] for r in load_set(cfg, name)]))
        assert s["generate"]["accuracy"] == pytest.approx(acc, abs=1e-4)  # unparsed counted as non-toxic
        for f in ("roc.png", "pr.png", "confusion.png", "hist.png", "roc.csv", "pr.csv", "hist.csv",
                  "confusion.csv"):
            assert (reports / "plots" / name / f).stat().st_size > 0, f
        rows = list(csv.DictReader((reports / "predictions" / f"{name}.csv").open()))
        assert len(rows) == 40 and {"id", "label", "score", "pred", "pred_tuned"} == set(rows[0])
    assert m["speed"]["samples_per_s"] > 0 and m["speed"]["startup_seconds"] > 0
    assert m["threshold_source"] == "detector.json"
    # self-describing: which detector folder and which evaluation files these metrics are of
    from chintox.provenance import dir_sha256, file_sha256

    assert m["detector_sha256"] == dir_sha256(root / "models" / "stage2")
    assert m["eval_data_sha256"] == {s: file_sha256(root / "data" / "splits" / f"{s}.jsonl")
                                     for s in ("toxicn_test", "cold_test")}
    details = json.loads((reports / "eval_details.json").read_text())
    ci = details["toxicn_test"]["ci95_default"]["f1"]
    assert ci[0] <= m["toxicn_test"]["default"]["f1"] <= ci[1]
    assert set(details["toxicn_test"]["slices_default"]) == {"topic", "toxic_type", "expression"}
    assert set(details["cold_test"]["slices_default"]) == {"topic", "fine_grained_label"}

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    runs = mlflow.search_runs(experiment_names=[cfg.mlflow.experiment], filter_string="tags.stage = 'evaluate'")
    assert len(runs) == 1
    run_id = runs.iloc[0]["run_id"]
    assert runs.iloc[0]["metrics.toxicn_test.default.f1"] == pytest.approx(m["toxicn_test"]["default"]["f1"])
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "plots/cold_test")}
    assert "plots/cold_test/roc.png" in arts


def test_base_model_without_threshold_tunes_on_val(workspace, tmp_path):
    """The base model has no detector.json: the threshold applied is the one with the best F1 on
    toxicn_val (checked here against F1 computed by sklearn at every candidate threshold)."""
    from sklearn.metrics import f1_score

    from tasks.evaluate import run_evaluate

    cfg, root = workspace
    base = root / "models" / "base"
    m = run_evaluate(cfg, model_dir=base, sets=["cold_test"], reports_dir=tmp_path, log_mlflow=False)
    assert m["threshold_source"] == "tuned on toxicn_val"
    assert list(m)[:1] == ["cold_test"]
    val = load_set(cfg, "toxicn_val")
    with make_scorer(base, cfg, "hf", progress=False) as scorer:
        s = scorer.score([r["text"] for r in val])
    y = np.array([r["label"] for r in val])
    cands = np.unique(np.r_[s, 0.5])
    f1 = {float(t): f1_score(y, (s >= t).astype(int), zero_division=0) for t in cands}
    best = max(f1.values())
    assert min(f1.values()) < best  # the threshold matters on this val set: the check is not vacuous
    t = m["cold_test"]["threshold_tuned"]  # rounded to 4 digits in metrics.json
    near = [c for c in f1 if abs(c - t) <= 5.01e-5]
    assert near and max(f1[c] for c in near) == pytest.approx(best), (t, best, sorted(f1.items()))


def test_table1_marks_missing_rows_and_has_reference(workspace):
    from tasks.table1 import run_table1

    cfg, root = workspace
    md = run_table1(cfg)
    text = md.read_text()
    assert "| Stage 2 only (ToxiCN) | hf |" in text and "not available: no detector for this row" in text  # no arm trained
    ours, published = text.split("## Published (Gao, one A800 GPU / GPT-4 API): not measured here")
    assert "81.46" not in ours and "| Qwen1.5-1.8B-Chat | ToxiCN | no | ToxiCN | 81.46 |" in published
    assert "## Prompt: the study's against ours" in published and "Not run yet" in published
    record = json.loads((root / "reports" / "table1.json").read_text())
    assert record["published"]["measured_here"] is False and len(record["published"]["rows"]) == len(STUDY_ROWS)
    assert record["prompt_comparison"]["status"] == "not run"  # no prompt_comparison.json in this reports folder
    rows = {(r["model"].split(" (")[0], r["backend"]): r for r in record["measured"]}
    assert "toxicn" not in rows[("Stage 2 only", "hf")]
    # the rows that must have been measured: figures, no note (a failed row has only a note)
    measured = {("Base, zero-shot", "hf"), ("Stage 1+2", "hf"), ("Char n-gram TF-IDF + logistic regression", "sklearn")}
    assert measured <= set(rows), sorted(rows)
    for key in measured:
        r = rows[key]
        assert "note" not in r and {"toxicn", "cold", "speed"} <= set(r), (key, r.get("note"))
        assert 0 <= r["toxicn"]["accuracy"] <= 1 and 0 <= r["cold"]["accuracy"] <= 1, (key, r)
        # and the markdown row carries the figures (Acc in %), not blank cells
        line = next(x for x in text.splitlines() if x.startswith(f"| {key[0]}") and f"| {key[1]} |" in x)
        assert f"| {100 * r['toxicn']['accuracy']:.2f} |" in line, line
