"""One test per validation rule, on small raw files written here (no GX: the rules never depend on it)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from rawfix import COLD_TEST, TOXICN_TEST, TOXICN_TRAIN, toxicn_obj, write_raw
from testutil import micro_config

from chintox.textnorm import normalise
from chintox.validation.quarantine import CountMismatchError, summarise
from chintox.validation.rules import validate_frames
from tasks.ingest import DataError, ingest
from tasks.validate import run_validate


def _run(tmp_path: Path, **raw_kw):
    raw = write_raw(tmp_path / "raw", **raw_kw)
    cfg = micro_config(tmp_path, **{"data.raw_dir": str(raw)})
    summary = run_validate(cfg, great_expectations=False)
    out = Path(cfg.data.out_dir)
    quarantine = [json.loads(line) for line in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]
    return summary, quarantine, out


def _adds_up(summary):
    for src, s in summary["sources"].items():
        assert s["rows_read"] == s["rows_kept"] + s["rows_quarantined"], src
        for sp in s["by_split"].values():
            assert sp["rows_read"] == sp["rows_kept"] + sp["rows_quarantined"]


def test_clean_fixture_keeps_every_row(tmp_path):
    summary, quarantine, out = _run(tmp_path)
    _adds_up(summary)
    assert quarantine == []
    assert summary["totals"]["rows_quarantined"] == 0
    assert summary["sources"]["toxicn"]["rows_read"] == len(TOXICN_TRAIN) + len(TOXICN_TEST)
    kept = pd.read_parquet(out / "validated" / "toxicn.parquet")
    assert len(kept) == len(TOXICN_TRAIN) + len(TOXICN_TEST)
    assert kept["label"].dtype == "int64"
    assert len(summary["raw_files"]) == 5 and all(len(f["sha256"]) == 64 for f in summary["raw_files"])


# ---------------------------------------------------------------- structural failures stop the run


def test_truncated_json_names_file_row_rule(tmp_path):
    text = json.dumps([toxicn_obj(c, t) for c, t in TOXICN_TRAIN], ensure_ascii=False, indent=1)
    with pytest.raises(DataError) as e:
        _run(tmp_path, toxicn_train=text[: len(text) // 2])
    assert e.value.rule == "json_parse"
    assert e.value.file.endswith("toxicn/train.json")
    assert e.value.row is not None and e.value.row > 1
    assert "toxicn/train.json" in str(e.value) and "json_parse" in str(e.value)


def test_csv_missing_column(tmp_path):
    csv_text = "\ufeff,split,topic,TEXT\n0,train,race,外国人都滚\n"  # no `label`
    with pytest.raises(DataError) as e:
        _run(tmp_path, cold_train=csv_text)
    assert (e.value.rule, e.value.row) == ("required_column", 1)
    assert e.value.file.endswith("cold/train.csv") and "label" in str(e.value)


def test_mixed_encoding_names_the_row(tmp_path):
    good = "\ufeff,split,topic,label,fine-grained-label,TEXT\n0,test,race,1,2,黑人就是懒\n".encode("utf-8")
    bad = "1,test,race,0,0,我喜欢这首歌\n".encode("gbk")
    with pytest.raises(DataError) as e:
        _run(tmp_path, cold_test=good + bad)
    assert (e.value.rule, e.value.row) == ("encoding", 3)
    assert e.value.file.endswith("cold/test.csv")


def test_missing_file(tmp_path):
    raw = write_raw(tmp_path / "raw")
    (raw / "toxicn" / "test.json").unlink()
    with pytest.raises(DataError) as e:
        ingest(raw)
    assert e.value.rule == "file_exists" and e.value.file.endswith("toxicn/test.json")


def test_cli_reports_structural_error(tmp_path):
    from typer.testing import CliRunner

    from chintox.cli import app

    raw = write_raw(tmp_path / "raw", toxicn_test="[{\"content\": \"x\"")
    params = Path(__file__).resolve().parents[3] / "params.yaml"
    res = CliRunner().invoke(app, ["validate", "--params", str(params), "--profile", "micro",
                                   "--set", f"data.raw_dir={raw}", "--set", f"data.out_dir={tmp_path / 'd'}"])
    assert res.exit_code == 1
    assert "toxicn/test.json" in res.output and "json_parse" in res.output


# ---------------------------------------------------------------- row rules go to quarantine


def _only(quarantine, rule):
    hits = [q for q in quarantine if q["rule"] == rule]
    assert len(hits) == 1, quarantine
    return hits[0]


def test_label_of_two(tmp_path):
    rows = list(TOXICN_TRAIN)
    rows[3] = (rows[3][0], 2)
    summary, quarantine, _ = _run(tmp_path, toxicn_train=rows)
    q = _only(quarantine, "label_invalid")
    assert (q["id"], q["row"], q["split"], q["label"]) == ("toxicn-train-000004", 4, "train", 2)
    assert "label 2" in q["reason"] and q["file"].endswith("toxicn/train.json")
    assert summary["sources"]["toxicn"]["quarantined_by_rule"] == {"label_invalid": 1}
    _adds_up(summary)


def test_label_invalid_in_eval_set_too(tmp_path):
    rows = list(COLD_TEST) + [("新的句子", "", 0)]
    summary, quarantine, _ = _run(tmp_path, cold_test=rows)
    q = _only(quarantine, "label_invalid")
    assert q["split"] == "test" and q["source"] == "cold" and q["label"] is None
    _adds_up(summary)


@pytest.mark.parametrize("text", ["", "   ", "\u3000\t\n"])
def test_empty_and_whitespace_text(tmp_path, text):
    rows = list(TOXICN_TRAIN) + [(text, 0)]
    summary, quarantine, _ = _run(tmp_path, toxicn_train=rows)
    q = _only(quarantine, "text_empty")
    assert q["row"] == len(rows) and q["text"] == text
    _adds_up(summary)


def test_null_text(tmp_path):
    rows = [toxicn_obj(c, t) for c, t in TOXICN_TRAIN] + [toxicn_obj(None, 1)]
    summary, quarantine, _ = _run(tmp_path, toxicn_train=rows)
    q = _only(quarantine, "text_missing")
    assert q["text"] is None and q["row"] == len(rows)
    _adds_up(summary)


def test_text_length_bounds(tmp_path):
    raw = write_raw(tmp_path / "raw", toxicn_train=list(TOXICN_TRAIN) + [("好" * 30, 0), ("啊", 1)])
    cfg = micro_config(tmp_path, **{"data.raw_dir": str(raw), "data.max_text_chars": 20, "data.min_text_chars": 2})
    summary = run_validate(cfg, great_expectations=False)
    by_rule = summary["sources"]["toxicn"]["quarantined_by_rule"]
    assert by_rule == {"text_too_long": 1, "text_too_short": 1}
    _adds_up(summary)


def test_duplicated_ids(tmp_path):
    raw = write_raw(tmp_path / "raw")
    frames, _ = ingest(raw)
    frames["toxicn"].loc[5, "id"] = frames["toxicn"].loc[2, "id"]
    cfg = micro_config(tmp_path, **{"data.raw_dir": str(raw)})
    flagged, decisions = validate_frames(frames, cfg.data)
    assert decisions["toxicn"].tolist().count("id_duplicate") == 1
    assert decisions["toxicn"].loc[5] == "id_duplicate" and decisions["toxicn"].loc[2] is None
    summary = summarise(flagged, decisions)
    assert summary["sources"]["toxicn"]["quarantined_by_rule"] == {"id_duplicate": 1}


def test_cqia_blank_output(tmp_path):
    cq = [{"instruction": "问题一", "input": "", "output": "答案"}, {"instruction": "问题二", "input": "", "output": "  "}]
    summary, quarantine, _ = _run(tmp_path, cqia=cq)
    q = _only(quarantine, "output_missing")
    assert q["source"] == "cqia" and q["row"] == 2
    _adds_up(summary)


def test_counts_mismatch_raises(tmp_path):
    raw = write_raw(tmp_path / "raw")
    frames, _ = ingest(raw)
    cfg = micro_config(tmp_path, **{"data.raw_dir": str(raw)})
    flagged, decisions = validate_frames(frames, cfg.data)
    decisions["toxicn"] = decisions["toxicn"].iloc[:-1]  # a lost row
    with pytest.raises(CountMismatchError):
        summarise(flagged, decisions)


# ---------------------------------------------------------------- duplicates, conflicts, leakage


def test_normalisation():
    assert normalise("你好，世界！") == normalise("你好 世界") == normalise("你好世界")
    assert normalise("ＡＢＣ好") == normalise("abc好")
    assert normalise("😆😆") != normalise("😡😡")
    assert normalise(None) is None


def test_duplicates_and_conflicts_in_training_data(tmp_path):
    rows = list(TOXICN_TRAIN) + [
        ("你们地域黑真的好无聊", 1),      # exact duplicate of row 1
        ("你们地域黑，真的好无聊！！", 1),  # normalised duplicate of row 1
        ("有争议的一句话", 1), ("有争议的一句话。", 0),  # conflicting labels
    ]
    summary, quarantine, _ = _run(tmp_path, toxicn_train=rows)
    rules = sorted(q["rule"] for q in quarantine)
    assert rules == ["conflicting_label", "conflicting_label", "duplicate_exact", "duplicate_normalised"]
    exact = _only(quarantine, "duplicate_exact")
    assert "toxicn-train-000001" in exact["reason"]
    _adds_up(summary)


def test_keep_policies(tmp_path):
    rows = list(TOXICN_TRAIN) + [("你们地域黑真的好无聊", 1), ("有争议的一句话", 1), ("有争议的一句话", 0)]
    raw = write_raw(tmp_path / "raw", toxicn_train=rows)
    cfg = micro_config(tmp_path, **{"data.raw_dir": str(raw), "data.duplicates": "keep",
                                    "data.conflicting_labels": "keep"})
    summary = run_validate(cfg, great_expectations=False)
    s = summary["sources"]["toxicn"]
    assert s["rows_quarantined"] == 0
    assert s["flagged_by_rule"]["duplicate_exact"]["train"] == 2  # reported although kept
    assert s["flagged_by_rule"]["conflicting_label"]["train"] == 2


def test_eval_duplicates_are_reported_not_dropped(tmp_path):
    rows = list(COLD_TEST) + [("黑人就是懒", 1, 2), ("我喜欢这首歌！", 1, 1)]
    summary, quarantine, _ = _run(tmp_path, cold_test=rows)
    assert quarantine == []
    w = summary["sources"]["cold"]["warnings"]
    assert w["eval_duplicate_exact"]["test"] == 1
    assert w["eval_conflicting_label"]["test"] == 2


def test_leakage(tmp_path):
    train = list(TOXICN_TRAIN) + [("地图炮，没意思！", 1)]      # = toxicn test row 1 after normalisation
    cold_train = [("外国人都滚", 1), ("反对地域歧视。", 0)]        # = cold test row 3
    summary, quarantine, _ = _run(tmp_path, toxicn_train=train, cold_train=cold_train)
    leaks = sorted((q["source"], q["row"]) for q in quarantine if q["rule"] == "leakage")
    assert leaks == [("cold", 2), ("toxicn", len(train))]
    assert summary["leakage"] == {"toxicn/train -> toxicn/test": 1, "cold/train -> cold/test": 1}
    _adds_up(summary)


def test_leakage_kept_but_counted(tmp_path):
    raw = write_raw(tmp_path / "raw", toxicn_train=list(TOXICN_TRAIN) + [("地图炮没意思", 1)])
    cfg = micro_config(tmp_path, **{"data.raw_dir": str(raw), "data.drop_train_leakage": False})
    summary = run_validate(cfg, great_expectations=False)
    assert summary["totals"]["rows_quarantined"] == 0
    assert summary["leakage"] == {"toxicn/train -> toxicn/test": 1}


def test_declared_length_mismatch_is_a_warning(tmp_path):
    rows = [toxicn_obj(c, t) for c, t in TOXICN_TRAIN]
    rows[0]["length"] = 999
    summary, quarantine, _ = _run(tmp_path, toxicn_train=rows)
    assert quarantine == []
    assert summary["sources"]["toxicn"]["warnings"]["declared_length_mismatch"] == {"test": 0, "train": 1}
