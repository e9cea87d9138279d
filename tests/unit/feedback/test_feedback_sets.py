"""The feedback sets: the conflict rules over imported corrections, holdout never trained on, leakage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from feedbackfix import EVAL_TEXTS

from chintox.feedback import (
    HOLDOUT_FILE,
    SOURCE_FILE,
    SUMMARY_FILE,
    TRAIN_FILE,
    feedback_part,
    load_feedback_set,
    read_jsonl,
    sets_path,
)
from chintox.splits import write_split
from tasks.feedback import run_feedback_import, run_feedback_sets


def _import(cfg, path: Path, rows: list[tuple[str, int]], moderator: str | None = None) -> dict:
    path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows), encoding="utf-8")
    return run_feedback_import(cfg, path, moderator=moderator)


def _both(cfg) -> dict[str, int]:
    rows = load_feedback_set(cfg.data.out_dir, TRAIN_FILE) + load_feedback_set(cfg.data.out_dir, HOLDOUT_FILE)
    return {r["text"]: r["label"] for r in rows}


# A: a=0, b=0, c=1 (latest 1, majority 0)   B: a=1, b=0 (a tie: the latest, 0)   C: a=1, b=1   D: a=0
@pytest.mark.parametrize(("rule", "expected", "dropped"), [
    ("latest", {"句子A": 1, "句子B": 0, "句子C": 1, "句子D": 0}, 0),
    ("majority", {"句子A": 0, "句子B": 0, "句子C": 1, "句子D": 0}, 0),
    ("drop", {"句子C": 1, "句子D": 0}, 2),
])
def test_conflict_rules_over_imports(make_cfg, tmp_path, rule, expected, dropped):
    cfg = make_cfg(**{"feedback.conflicts": rule, "feedback.train": True})
    _import(cfg, tmp_path / "a.csv", [("句子A", 0), ("句子B", 1), ("句子C", 1), ("句子D", 0)], "a")
    _import(cfg, tmp_path / "b.csv", [("句子A", 0), ("句子B", 0), ("句子C", 1)], "b")
    _import(cfg, tmp_path / "c.csv", [("句子A", 1)], "c")
    s = run_feedback_sets(cfg)
    assert _both(cfg) == expected
    assert s["conflicts"] == {"found": 2, "resolved": 2 - dropped, "dropped": dropped}
    assert (s["corrections"], s["imports"], s["texts"]) == (8, 3, 4)
    assert s["train"]["rows"] + s["holdout"]["rows"] + dropped + s["leakage_dropped"] == s["texts"]
    counts = {r["text"]: r["corrections"] for r in load_feedback_set(cfg.data.out_dir, TRAIN_FILE)
              + load_feedback_set(cfg.data.out_dir, HOLDOUT_FILE)}
    assert counts.get("句子C") == 2


def test_latest_within_one_file_is_its_last_row(make_cfg, tmp_path):
    cfg = make_cfg(**{"feedback.train": True})
    _import(cfg, tmp_path / "a.csv", [("同一句", 1), ("同一句。", 0)])
    run_feedback_sets(cfg)
    assert _both(cfg) == {"同一句。": 0}


def test_holdout_texts_are_never_trained_on(make_cfg, tmp_path):
    cfg = make_cfg(**{"feedback.train": True, "feedback.holdout_share": 0.3})
    first = [(f"第{i}条评论", i % 2) for i in range(40)]
    _import(cfg, tmp_path / "a.csv", first)
    s1 = run_feedback_sets(cfg)
    train = load_feedback_set(cfg.data.out_dir, TRAIN_FILE)
    holdout = load_feedback_set(cfg.data.out_dir, HOLDOUT_FILE)
    assert train and holdout and s1["train"]["rows"] + s1["holdout"]["rows"] == 40
    assert not {r["text_key"] for r in train} & {r["text_key"] for r in holdout}
    assert all(r["split"] == feedback_part(r["text_key"], 0.3) for r in train + holdout)
    assert [r["text_key"] for r in train] == sorted(r["text_key"] for r in train)
    assert all(r["id"] == f"fb-{r['text_key'][:16]}" and r["source"] == "feedback" for r in train + holdout)
    assert s1["train"]["toxic"] + s1["holdout"]["toxic"] == 20

    # more corrections, some re-labelling held-out texts: a held-out text stays held out
    _import(cfg, tmp_path / "b.csv", [(r["text"], 1 - r["label"]) for r in holdout] + [("新来的评论", 1)])
    run_feedback_sets(cfg)
    holdout2 = load_feedback_set(cfg.data.out_dir, HOLDOUT_FILE)
    assert {r["text_key"] for r in holdout} <= {r["text_key"] for r in holdout2}
    assert not {r["text_key"] for r in holdout2} & {r["text_key"] for r in load_feedback_set(
        cfg.data.out_dir, TRAIN_FILE)}
    source = json.loads(sets_path(cfg.data.out_dir, SOURCE_FILE).read_text(encoding="utf-8"))
    assert (source["corrections"], source["imports"], source["used"]) == (40 + len(holdout) + 1, 2, True)
    assert len(source["store_sha256"]) == 64


def test_feedback_off_writes_empty_sets_that_do_not_change_with_the_store(cfg, tmp_path):
    assert cfg.feedback.train is False
    _import(cfg, tmp_path / "a.csv", [("你好", 0), ("滚开", 1)])
    out = Path(cfg.data.out_dir) / "feedback"
    s = run_feedback_sets(cfg)
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert files[TRAIN_FILE] == b"" and files[HOLDOUT_FILE] == b""
    assert json.loads(files[SOURCE_FILE]) == {"used": False}
    assert s["train_enabled"] is False and s["rows_written"] == {"train": 0, "holdout": 0}
    assert s["train"]["rows"] + s["holdout"]["rows"] == 2       # the counts say what feedback.train would use
    _import(cfg, tmp_path / "b.csv", [("又一句", 1)])
    run_feedback_sets(cfg)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # stage 2's input unchanged
    summary = json.loads((Path(cfg.data.out_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert summary["corrections"] == 3


def test_a_text_that_became_an_evaluation_text_is_left_out(make_cfg, tmp_path):
    cfg = make_cfg(**{"feedback.train": True})
    _import(cfg, tmp_path / "a.csv", [("后来进了验证集", 1), ("一直是反馈", 0)])
    write_split(cfg.data.out_dir, "toxicn_val", [
        {"id": "v-0", "text": EVAL_TEXTS["toxicn_val"], "label": 1, "source": "toxicn", "split": "val"},
        {"id": "v-1", "text": "后来进了验证集！", "label": 1, "source": "toxicn", "split": "val"}])
    s = run_feedback_sets(cfg)
    assert s["leakage_dropped"] == 1 and _both(cfg) == {"一直是反馈": 0}
    assert s["texts"] == 2 and len(read_jsonl(Path(cfg.feedback.store) / "corrections.jsonl")) == 2
