"""The review queue: out of the judgement log, filled in by a moderator, back in through the import."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from feedbackfix import EVAL_TEXTS, judgement, write_log

from chintox.feedback import FeedbackError, read_jsonl
from chintox.feedback.queue import COLUMNS
from tasks.feedback import run_feedback_export, run_feedback_import

LOG = [
    judgement("p1", "第一句话", 0.95, 1.0),
    judgement("p2", "第二句话", 0.55, 2.0),
    judgement("p3", "第三句话", 0.40, 3.0),
    judgement("p4", "第四句话", 0.05, 4.0),
    judgement("p5", "第五句话", 0.72, 5.0),
    judgement("p6", "第二句话！", 0.30, 6.0, version="4"),   # the same text as p2, later: p6 stands for it
    judgement("p7", EVAL_TEXTS["cold_test"], 0.5, 7.0),      # an evaluation text: never in the queue
    judgement("p8", "已经纠正过", 0.5, 8.0),                  # corrected below: not asked again
]


@pytest.fixture
def logged(cfg, tmp_path):
    write_log(cfg.serve.log_url, LOG)
    done = tmp_path / "done.csv"
    done.write_text("text,label\n已经纠正过,1\n", encoding="utf-8")
    run_feedback_import(cfg, done)
    return cfg


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_export_picks_uncertain_then_random_and_leaves_out_what_it_must(logged, tmp_path):
    out = tmp_path / "queue.csv"
    s = run_feedback_export(logged, out, size=4, random_share=0.25, seed=3)
    rows = _read_csv(out)
    assert list(rows[0]) == list(COLUMNS)
    assert [r["prediction_id"] for r in rows[:3]] == ["p3", "p6", "p5"]  # |score - 0.5|: .10, .20, .22
    assert [r["review_reason"] for r in rows] == ["uncertain"] * 3 + ["random"]
    assert rows[3]["prediction_id"] in {"p1", "p4"}
    assert not {"p2", "p7", "p8"} & {r["prediction_id"] for r in rows}
    assert (s["rows"], s["uncertain"], s["random"], s["candidates"]) == (4, 3, 1, 5)
    assert s["skipped"] == {"blank_or_too_long": 0, "corrected": 1, "leakage": 1}
    assert all(r["label"] == "" and r["note"] == "" and r["moderator"] == "" for r in rows)
    assert rows[1]["model_version"] == "4" and rows[1]["predicted_label"] == "0"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_export_fill_labels_import_round_trip(logged, tmp_path, suffix):
    out = tmp_path / f"queue{suffix}"
    run_feedback_export(logged, out, size=10, random_share=0.5)
    if suffix == ".csv":
        rows = _read_csv(out)
        for r in rows:
            r["label"], r["moderator"] = str(1 - int(r["predicted_label"])), "mod-x"
        with open(out, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        rows = read_jsonl(out)
        for r in rows:
            r["label"], r["moderator"] = 1 - r["predicted_label"], "mod-x"
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert len(rows) == 5
    s = run_feedback_import(logged, out)
    assert (s["rows_read"], s["accepted"], s["quarantined"]) == (5, 5, 0), s["by_rule"]
    new = [c for c in read_jsonl(Path(logged.feedback.store) / "corrections.jsonl") if c["import_id"] == s["import_id"]]
    assert all(c["model_version"] in {"3", "4"} and c["label"] == 1 - c["predicted_label"]
               and c["moderator"] == "mod-x" for c in new)
    # the corrected texts leave the queue
    again = run_feedback_export(logged, tmp_path / f"again{suffix}", size=10)
    assert again["rows"] == 0 and again["skipped"]["corrected"] == 6


def test_export_refuses_a_log_without_texts(make_cfg, tmp_path):
    cfg = make_cfg()
    write_log(cfg.serve.log_url, LOG[:3], log_texts=False)
    with pytest.raises(FeedbackError, match=r"none with its text.*serve.log_texts: true"):
        run_feedback_export(cfg, tmp_path / "queue.csv")
    assert not (tmp_path / "queue.csv").exists()


def test_export_of_an_empty_log_and_since(make_cfg, tmp_path):
    cfg = make_cfg()
    s = run_feedback_export(cfg, tmp_path / "empty.jsonl")
    assert s["rows"] == 0 and (tmp_path / "empty.jsonl").read_bytes() == b""
    assert not Path(cfg.serve.log_url.removeprefix("sqlite:///")).exists()  # reading did not create it
    write_log(cfg.serve.log_url, LOG)
    s = run_feedback_export(cfg, tmp_path / "late.csv", since="1970-01-01T00:00:05+00:00")
    assert sorted(r["prediction_id"] for r in _read_csv(tmp_path / "late.csv")) == ["p5", "p6", "p8"]
