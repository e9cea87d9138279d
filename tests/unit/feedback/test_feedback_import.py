"""Importing corrections: file-level errors, quarantined rows with their rule, idempotence, GX, DVC."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from feedbackfix import EVAL_TEXTS, TRAIN_TEXT, judgement, write_log

from chintox.feedback import CORRECTIONS, IMPORTS, QUARANTINE, STORE_FILES, FeedbackError, read_jsonl
from chintox.splits import split_path
from tasks.feedback import corrections_count, run_feedback_import, run_feedback_init


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def _store_bytes(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.glob("*")) if p.is_file()} if store.is_dir() else {}


def test_init_creates_an_empty_store_and_never_changes_one(cfg):
    store = Path(cfg.feedback.store)
    assert run_feedback_init(cfg)["created"] == list(STORE_FILES)
    assert {p.name: p.read_bytes() for p in store.iterdir()} == dict.fromkeys(STORE_FILES, b"")
    (store / CORRECTIONS).write_text('{"x": 1}\n', encoding="utf-8")
    (store / IMPORTS).unlink()
    assert run_feedback_init(cfg)["created"] == [IMPORTS]
    assert (store / CORRECTIONS).read_text(encoding="utf-8") == '{"x": 1}\n'


@pytest.mark.parametrize(("name", "content", "rule", "where"), [
    ("no_label.csv", "text,note\n你好,嗯\n".encode(), "label_column_missing", "no `label` column"),
    ("no_text.csv", b"label,note\n1,x\n", "text_column_missing", "neither a `text` nor a `prediction_id`"),
    ("no_label.jsonl", '{"text": "你好"}\n'.encode(), "label_column_missing", "no `label` column"),
    # "text,label\n" is 11 bytes: the GBK-encoded text starts at byte offset 11, line 2
    ("gbk.csv", b"text,label\n" + "你好".encode("gbk") + b",1\n", "encoding",
     "line 2, byte 1 of the line (byte offset 11 of the file) is 0xc4"),
    ("missing.csv", None, "file_missing", "no such file"),
    ("table.xlsx", b"PK", "format", ".csv"),
])
def test_file_level_errors_name_file_and_rule_and_write_nothing(cfg, tmp_path, name, content, rule, where):
    f = tmp_path / name
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(FeedbackError) as e:
        run_feedback_import(cfg, f)
    msg = str(e.value)
    assert name in msg and f"rule {rule}" in msg and where in msg, msg
    assert _store_bytes(Path(cfg.feedback.store)) == {}


def test_bad_rows_are_quarantined_with_file_row_and_rule(cfg, tmp_path):
    long_text = "长" * (cfg.data.max_text_chars + 1)
    rows = [
        "好好说话,1,,",                        # 1 accepted
        "你真是个垃圾,2,,",                    # 2 label_invalid
        "有点过分,toxic,,",                    # 3 label_invalid
        '"   ",1,,',                           # 4 text_empty
        f"{EVAL_TEXTS['toxicn_val']},0,,",     # 5 leakage (an evaluation text)
        ",1,,",                                # 6 text_missing
        "另一句,,,",                           # 7 label_missing
        "好好说话,1,,",                        # 8 duplicate (row 1)
        '"好好说话！",0,,',                    # 9 accepted: the same text re-labelled
        f"{long_text},1,,",                    # 10 text_too_long
        f"{TRAIN_TEXT},1,,",                   # 11 accepted: a training text may be corrected
        "第三句,1.0,笔记,",                    # 12 accepted (1.0 is 1)
        "第四句,True,,",                       # 13 label_invalid
        "第五句,0,,,多出来的字段",             # 14 malformed_row
    ]
    f = _csv(tmp_path / "batch.csv", "text,label,note,moderator\n" + "\n".join(rows) + "\n")
    s = run_feedback_import(cfg, f, moderator="m1")
    expected = {"malformed_row": 1, "label_missing": 1, "label_invalid": 3, "text_missing": 1, "text_empty": 1,
                "text_too_long": 1, "leakage": 1, "duplicate": 1}
    assert s["by_rule"] == expected
    assert (s["rows_read"], s["accepted"], s["quarantined"]) == (14, 4, 10)
    assert s["already_imported"] is False and s["store_version"] is None and "no dvc.yaml" in s["note"]

    store = Path(cfg.feedback.store)
    q = read_jsonl(store / QUARANTINE)
    assert len(q) == s["quarantined"]
    assert {(r["row"], r["rule"]) for r in q} == {
        (2, "label_invalid"), (3, "label_invalid"), (4, "text_empty"), (5, "leakage"), (6, "text_missing"),
        (7, "label_missing"), (8, "duplicate"), (10, "text_too_long"), (13, "label_invalid"), (14, "malformed_row")}
    assert all(r["file"] == "batch.csv" and r["message"] and r["import_id"] == s["import_id"] for r in q)
    by_row = {r["row"]: r for r in q}
    assert by_row[3]["raw"] == {"text": "有点过分", "label": "toxic", "note": "", "moderator": ""}
    assert by_row[14]["raw"]["extra_fields"] == "多出来的字段"

    c = read_jsonl(store / CORRECTIONS)
    assert [(r["row"], r["text"], r["label"]) for r in c] == [
        (1, "好好说话", 1), (9, "好好说话！", 0), (11, TRAIN_TEXT, 1), (12, "第三句", 1)]
    assert c[0]["text_key"] == c[1]["text_key"]
    assert all(r["moderator"] == "m1" and r["file"] == "batch.csv" and r["imported_at"].endswith("+00:00")
               and r["id"] == f"fb-{s['import_id'][:12]}-{r['row']}" for r in c)
    assert c[3]["note"] == "笔记" and c[0]["note"] is None
    assert read_jsonl(store / IMPORTS) == [{k: s[k] for k in (
        "import_id", "file", "imported_at", "rows_read", "accepted", "quarantined", "by_rule")} | {"file": "batch.csv"}]
    assert json.loads((store / "last_import.json").read_text(encoding="utf-8"))["by_rule"] == expected


def test_prediction_ids_resolve_in_the_judgement_log(make_cfg, tmp_path):
    cfg = make_cfg()
    write_log(cfg.serve.log_url, [judgement("p1", "你这个人真差劲", 0.7, 1.0, version="5")])
    f = tmp_path / "by_id.jsonl"
    lines = ['{"prediction_id": "p1", "label": 0, "moderator": "a"}',
             '{"prediction_id": "p1", "text": "完全不同的话", "label": 1}',
             '{"prediction_id": "nope", "label": 1}',
             '[1, 2]',
             '{broken json',
             '',
             '{"text": 5, "label": 1}']
    f.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    s = run_feedback_import(cfg, f)
    assert s["by_rule"] == {"malformed_row": 2, "text_missing": 1, "prediction_unknown": 1,
                            "prediction_text_mismatch": 1}
    assert {r["row"]: r["rule"] for r in read_jsonl(Path(cfg.feedback.store) / QUARANTINE)} == {
        2: "prediction_text_mismatch", 3: "prediction_unknown", 4: "malformed_row", 5: "malformed_row",
        7: "text_missing"}   # JSON lines: the row is the line number (line 6 is blank)
    (c,) = read_jsonl(Path(cfg.feedback.store) / CORRECTIONS)
    assert (c["text"], c["label"], c["prediction_id"], c["model_version"], c["predicted_label"]) == (
        "你这个人真差劲", 0, "p1", "5", 1)

    # a log kept without texts: the row must bring the text, and it must hash to the logged sha256
    cfg2 = make_cfg(**{"serve.log_url": f"sqlite:///{tmp_path / 'no_texts.db'}"})
    write_log(cfg2.serve.log_url, [judgement("p2", "没有保存的原文", 0.2, 1.0)], log_texts=False)
    f2 = _csv(tmp_path / "p2.csv", "prediction_id,text,label\np2,,1\np2,没有保存的原文,1\np2,别的话,0\n")
    s2 = run_feedback_import(cfg2, f2)
    assert s2["by_rule"] == {"prediction_without_text": 1, "prediction_text_mismatch": 1}
    assert s2["accepted"] == 1


def test_same_file_twice_changes_nothing_and_a_repeat_is_a_duplicate(cfg, tmp_path):
    f = _csv(tmp_path / "a.csv", "text,label\n你说得对,0\n你去死吧,1\n")
    first = run_feedback_import(cfg, f)
    store = Path(cfg.feedback.store)
    before = _store_bytes(store)
    again = run_feedback_import(cfg, _csv(tmp_path / "a_copy.csv", f.read_text(encoding="utf-8")))
    assert again["already_imported"] is True and again["import_id"] == first["import_id"]
    assert again["accepted"] == 2 and again["file"] == "a.csv" and again["corrections_total"] == 2
    assert _store_bytes(store) == before

    g = _csv(tmp_path / "b.csv", "text,label\n你去死吧！,1\n新的一句,0\n")
    s = run_feedback_import(cfg, g)
    assert (s["accepted"], s["by_rule"]) == (1, {"duplicate": 1})
    assert corrections_count(cfg) == 3 == s["corrections_total"]
    assert len(read_jsonl(store / IMPORTS)) == 2


def test_missing_splits_stop_the_import_before_anything_is_written(cfg, tmp_path):
    split_path(cfg.data.out_dir, "cold_test").unlink()
    f = _csv(tmp_path / "a.csv", "text,label\n你好,0\n")
    with pytest.raises(FeedbackError, match=r"cold_test.*dvc repro split"):
        run_feedback_import(cfg, f)
    assert _store_bytes(Path(cfg.feedback.store)) == {}


def test_great_expectations_reports_what_was_quarantined(cfg, tmp_path):
    f = _csv(tmp_path / "gx.csv", "text,label\n好的,1\n坏的,7\n,1\n好的,1\n还行,0\n")
    s = run_feedback_import(cfg, f, great_expectations=True)
    assert s["by_rule"] == {"label_invalid": 1, "text_missing": 1, "duplicate": 1}
    gx = s["great_expectations"]
    assert gx["success"] is False
    per_rule = {r["rule"]: r["unexpected_count"] for r in gx["results"] if r["rule"]}
    assert {k: v for k, v in per_rule.items() if v} == s["by_rule"]
    assert all(r["success"] for r in gx["results"] if not r["rule"])   # rows unique, accepted labels in {0, 1}
    docs = Path(cfg.feedback.store) / "data_docs" / "index.html"
    assert s["data_docs"] == str(docs) and docs.is_file()
    assert "feedback_import_suite" in docs.read_text(encoding="utf-8")


def test_dvc_commit_records_each_import_as_a_store_version(make_cfg, tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=proj, check=True)
    (proj / "dvc.yaml").write_text("stages:\n  feedback_store:\n    cmd: echo store\n    outs:\n"
                                   "      - store:\n          persist: true\n", encoding="utf-8")
    cfg = make_cfg(**{"feedback.store": str(proj / "store")})
    run_feedback_init(cfg)
    v1 = run_feedback_import(cfg, _csv(tmp_path / "a.csv", "text,label\n你好,0\n"))["store_version"]
    v2 = run_feedback_import(cfg, _csv(tmp_path / "b.csv", "text,label\n滚,1\n"))["store_version"]
    assert v1 and v2 and v1 != v2 and v2.endswith(".dir")
    assert f"md5: {v2}" in (proj / "dvc.lock").read_text(encoding="utf-8")
    assert run_feedback_import(cfg, tmp_path / "b.csv")["store_version"] == v2   # a re-import: no new version
