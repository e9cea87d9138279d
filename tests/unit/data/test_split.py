"""Splits on a small fixture: stratification, determinism, parameters touching only split outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from rawfix import TOXICN_TRAIN, write_raw
from testutil import micro_config

from chintox.splits import SPLITS, load_split
from tasks.split import run_split
from tasks.validate import run_validate

MORE_TRAIN = TOXICN_TRAIN + [(f"第{i}条普通评论内容", i % 2) for i in range(40)]


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def validated(tmp_path):
    raw = write_raw(tmp_path / "raw", toxicn_train=MORE_TRAIN)

    def make(root: Path, **over):
        cfg = micro_config(root, **{"data.raw_dir": str(raw), **over})
        run_validate(cfg, great_expectations=False)
        return cfg
    return make


def test_outputs_and_contract(tmp_path, validated):
    cfg = validated(tmp_path / "a")
    summary = run_split(cfg)
    out = cfg.data.out_dir
    train, val = load_split(out, "toxicn_train"), load_split(out, "toxicn_val")
    assert len(train) + len(val) == len(MORE_TRAIN)
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in val})
    # stratified: each label contributes ~val_fraction of its rows
    for label in (0, 1):
        n = sum(1 for _, t in MORE_TRAIN if t == label)
        assert sum(1 for r in val if r["label"] == label) == round(n * cfg.data.val_fraction)
    r = val[0]
    assert set(r) == {"id", "text", "label", "source", "split", "topic", "toxic_type", "expression", "target",
                      "platform"}
    assert r["split"] == "val" and isinstance(r["label"], int) and r["target"] == [0, 0, 0, 0, 0]
    cold = load_split(out, "cold_test")
    assert set(cold[0]) == {"id", "text", "label", "source", "split", "topic", "fine_grained_label"}
    s1 = load_split(out, "stage1")
    assert [m["role"] for m in s1[0]["messages"]] == ["user", "assistant"]
    assert s1[1]["messages"][0]["content"] == "翻译成英文\n你好"
    assert set(s1[0]) == {"id", "messages", "subset", "task_type", "domain"}
    assert summary["splits"]["toxicn_val"]["rows"] == len(val)
    assert summary["train_overlap"] == {"toxicn_val": 0, "toxicn_test": 0, "cold_test": 0}
    text = (Path(out) / "splits" / "toxicn_train.jsonl").read_text(encoding="utf-8")
    assert "地域黑" in text  # UTF-8, not \u escapes
    assert set(SPLITS) == {p.stem for p in (Path(out) / "splits").glob("*.jsonl")}


def test_same_seed_same_files(tmp_path, validated):
    cfg = validated(tmp_path / "a")
    run_split(cfg)
    first = _digests(Path(cfg.data.out_dir) / "splits")
    run_split(cfg)
    assert _digests(Path(cfg.data.out_dir) / "splits") == first
    cfg_b = validated(tmp_path / "b")
    run_split(cfg_b)
    assert _digests(Path(cfg_b.data.out_dir) / "splits") == first


def test_val_fraction_changes_only_split_outputs(tmp_path, validated):
    a = validated(tmp_path / "a")
    b = validated(tmp_path / "b", **{"data.val_fraction": 0.3})
    run_split(a), run_split(b)
    da, db = Path(a.data.out_dir), Path(b.data.out_dir)
    assert _digests(da / "validated") == _digests(db / "validated")
    assert (da / "quarantine.jsonl").read_bytes() == (db / "quarantine.jsonl").read_bytes()
    sa, sb = _digests(da / "splits"), _digests(db / "splits")
    assert sa["toxicn_val.jsonl"] != sb["toxicn_val.jsonl"]
    for same in ("toxicn_test.jsonl", "cold_test.jsonl", "stage1.jsonl"):
        assert sa[same] == sb[same]
    assert len(load_split(db, "toxicn_val")) > len(load_split(da, "toxicn_val"))


def test_seed_changes_val(tmp_path, validated):
    a = validated(tmp_path / "a")
    b = validated(tmp_path / "b", **{"data.seed": 7})
    run_split(a), run_split(b)
    ids = lambda c: [r["id"] for r in load_split(c.data.out_dir, "toxicn_val")]
    assert ids(a) != ids(b)


def test_kept_duplicates_never_straddle_train_and_val(tmp_path):
    rows = [(f"重复的句子{i % 10}", i % 2 if i % 10 else 1) for i in range(60)]
    rows = [(t, (int(t[-1]) % 2)) for t, _ in rows]  # copies share a label
    raw = write_raw(tmp_path / "raw", toxicn_train=rows)
    cfg = micro_config(tmp_path, **{"data.raw_dir": str(raw), "data.duplicates": "keep", "data.val_fraction": 0.3})
    run_validate(cfg, great_expectations=False)
    run_split(cfg)
    tr = {r["text"] for r in load_split(cfg.data.out_dir, "toxicn_train")}
    va = {r["text"] for r in load_split(cfg.data.out_dir, "toxicn_val")}
    assert tr and va and tr.isdisjoint(va)


def test_cqia_cap_is_seeded(tmp_path):
    cq = [{"instruction": f"问题{i}", "input": "", "output": f"答案{i}"} for i in range(50)]
    raw = write_raw(tmp_path / "raw", cqia=cq)

    def stage1_ids(root: Path, seed: int) -> list[str]:
        cfg = micro_config(root, **{"data.raw_dir": str(raw), "data.cqia_max_records": 10, "data.seed": seed})
        run_validate(cfg, great_expectations=False)
        s = run_split(cfg)
        assert s["splits"]["stage1"] == {"rows": 10, "available": 50}
        return [r["id"] for r in load_split(cfg.data.out_dir, "stage1")]

    first = stage1_ids(tmp_path / "a", 42)
    assert len(first) == 10 and len(set(first)) == 10
    assert first == sorted(first)  # file order kept
    assert stage1_ids(tmp_path / "b", 42) == first  # same seed: same sample, in a fresh run
    others = [stage1_ids(tmp_path / f"s{seed}", seed) for seed in (7, 8)]
    # another seed: another sample (not the first 10, not a fixed pick); two seeds, so a chance
    # collision of one seed's sample with seed 42's (~1e-10) cannot hide a sample that ignores the seed
    assert others[0] != first and others[1] != first and others[0] != others[1], (first, others)


def test_missing_inputs_and_outputs_are_clear(tmp_path):
    cfg = micro_config(tmp_path)
    with pytest.raises(RuntimeError, match="chintox validate"):
        run_split(cfg)
    with pytest.raises(FileNotFoundError, match="chintox split"):
        load_split(tmp_path, "toxicn_train")
    with pytest.raises(ValueError, match="unknown split"):
        load_split(tmp_path, "nope")


def test_split_summary_records_what_was_written(tmp_path, validated):
    """split_summary.json describes the files on disk (hashes, row counts) and the parameters that
    made them, on non-default parameters (a summary hard-wired to the defaults would fail)."""
    cfg = validated(tmp_path / "a", **{"data.val_fraction": 0.3, "data.seed": 7})
    returned = run_split(cfg)
    out = Path(cfg.data.out_dir)
    s = json.loads((out / "split_summary.json").read_text(encoding="utf-8"))
    assert s == returned
    assert s["params"] == {"seed": 7, "val_fraction": 0.3, "cqia_max_records": cfg.data.cqia_max_records}
    for name in SPLITS:
        f = out / "splits" / f"{name}.jsonl"
        assert s["files"][name] == hashlib.sha256(f.read_bytes()).hexdigest(), name
        assert s["splits"][name]["rows"] == len(load_split(out, name)), name
    # the recorded val_fraction is the one applied: each label class gives 30% of its rows to val
    val = load_split(out, "toxicn_val")
    for label in (0, 1):
        n = sum(1 for _, t in MORE_TRAIN if t == label)
        assert sum(1 for r in val if r["label"] == label) == round(n * 0.3), label
