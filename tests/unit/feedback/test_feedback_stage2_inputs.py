"""What stage 2 takes from the feedback sets (no training here: the inputs and the lineage it records)."""

from __future__ import annotations

import pytest

from chintox.card import LINEAGE_FEEDBACK_HOLDOUT, LINEAGE_FEEDBACK_STORE, LINEAGE_FEEDBACK_TRAIN
from chintox.feedback import HOLDOUT_FILE, SOURCE_FILE, TRAIN_FILE, sets_path, write_jsonl
from chintox.provenance import file_sha256


def _sets(cfg, train, holdout, source):
    import json

    write_jsonl(sets_path(cfg.data.out_dir, TRAIN_FILE), train)
    write_jsonl(sets_path(cfg.data.out_dir, HOLDOUT_FILE), holdout)
    sets_path(cfg.data.out_dir, SOURCE_FILE).write_text(json.dumps(source), encoding="utf-8")


def test_stage2_adds_each_feedback_row_repeat_times(make_cfg):
    from tasks.train import _feedback_records

    cfg = make_cfg(**{"feedback.train": True, "feedback.repeat": 3})
    rows = [{"id": "fb-a", "text": "甲", "label": 1}, {"id": "fb-b", "text": "乙", "label": 0}]
    _sets(cfg, rows, [], {"store_sha256": "s" * 64, "corrections": 2, "imports": 1, "used": True})
    recs = _feedback_records(cfg)
    assert sorted((r["text"], r["label"]) for r in recs) == [("乙", 0)] * 3 + [("甲", 1)] * 3


def test_stage2_without_the_feedback_sets_says_what_to_run(make_cfg):
    from tasks.train import _feedback_records

    with pytest.raises(FileNotFoundError, match="dvc repro feedback"):
        _feedback_records(make_cfg(**{"feedback.train": True}))


def test_lineage_names_the_feedback_sets_only_when_trained_on_them(make_cfg, tmp_path):
    from tasks.train import _lineage

    cfg = make_cfg(**{"feedback.train": True})
    _sets(cfg, [{"id": "fb-a", "text": "甲", "label": 1}], [{"id": "fb-b", "text": "乙", "label": 0}],
          {"store_sha256": "s" * 64, "corrections": 2, "imports": 1, "used": True})
    from chintox.splits import write_split

    write_split(cfg.data.out_dir, "toxicn_val", [{"id": "v", "text": "丙", "label": 0}])
    upstream = tmp_path / "stage1"
    upstream.mkdir()
    (upstream / "config.json").write_text("{}", encoding="utf-8")
    with_fb = _lineage(cfg, upstream, str(upstream), feedback=True)
    assert with_fb[LINEAGE_FEEDBACK_TRAIN] == file_sha256(sets_path(cfg.data.out_dir, TRAIN_FILE))
    assert with_fb[LINEAGE_FEEDBACK_HOLDOUT] == file_sha256(sets_path(cfg.data.out_dir, HOLDOUT_FILE))
    assert with_fb[LINEAGE_FEEDBACK_STORE] == "s" * 64
    without = _lineage(cfg, upstream, str(upstream), feedback=False)
    assert not {LINEAGE_FEEDBACK_TRAIN, LINEAGE_FEEDBACK_HOLDOUT, LINEAGE_FEEDBACK_STORE} & set(without)
