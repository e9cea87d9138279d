"""Validation and splitting of the real shared data sets (CI has ../shared/datasets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testutil import micro_config

from chintox.splits import load_split
from tasks.split import run_split
from tasks.validate import run_validate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shared_datasets):
    root = tmp_path_factory.mktemp("real")
    cfg = micro_config(root, **{"data.raw_dir": str(shared_datasets), "data.cqia_max_records": None})
    return cfg, run_validate(cfg), run_split(cfg)


def test_every_row_accounted_for(real_run):
    cfg, summary, _ = real_run
    src = summary["sources"]
    assert {k: v["rows_read"] for k, v in src.items()} == {"toxicn": 12011, "cold": 31049, "cqia": 17971}
    for s in src.values():
        assert s["rows_read"] == s["rows_kept"] + s["rows_quarantined"]
        assert sum(s["quarantined_by_rule"].values()) == s["rows_quarantined"]
    lines = (Path(cfg.data.out_dir) / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == summary["totals"]["rows_quarantined"]
    assert all({"id", "source", "split", "file", "row", "rule", "reason", "text"} <= set(json.loads(x)) for x in lines)
    # every raw file read is listed in the published SHA256SUMS under its own path, with that hash
    hashes = {f["path"]: f["sha256"] for f in summary["raw_files"]}
    sums = {k.removeprefix("./"): h for h, k in (line.split(maxsplit=1) for line in
            (Path(cfg.data.raw_dir) / "SHA256SUMS").read_text().splitlines() if line.strip())}
    assert len(hashes) == len(summary["raw_files"]) >= 3  # one entry per file, at least one per source
    assert {f["source"] for f in summary["raw_files"]} == {"toxicn", "cold", "cqia"}
    unmatched = sorted(set(hashes) - set(sums))
    assert not unmatched, f"raw files not in SHA256SUMS (path matching broken?): {unmatched[:5]}"
    assert {p: h for p, h in hashes.items() if sums[p] != h} == {}


def test_known_defects_are_found(real_run):
    _, summary, _ = real_run
    tox, cold = summary["sources"]["toxicn"], summary["sources"]["cold"]
    assert tox["warnings"]["declared_length_mismatch"]["train"] == 1257  # as stated in the issue
    assert cold["flagged_by_rule"]["conflicting_label"]["train"] > 0
    assert summary["leakage"].get("cold/train -> cold/test", 0) > 0
    assert tox["by_split"]["test"]["rows_quarantined"] == 0  # evaluation sets stay whole
    assert cold["by_split"]["test"]["rows_quarantined"] == 0
    assert (Path(summary["data_docs"])).is_file()


def test_splits(real_run):
    cfg, _, split = real_run
    s = split["splits"]
    assert s["toxicn_test"]["rows"] == 2411 and s["cold_test"]["rows"] == 5323
    assert abs(s["toxicn_val"]["rows"] / (s["toxicn_train"]["rows"] + s["toxicn_val"]["rows"]) - 0.1) < 0.01
    assert abs(s["toxicn_val"]["positive_rate"] - s["toxicn_train"]["positive_rate"]) < 0.01
    assert split["train_overlap"] == {"toxicn_val": 0, "toxicn_test": 0, "cold_test": 0}
    stage1 = load_split(cfg.data.out_dir, "stage1")
    assert len(stage1) == s["stage1"]["available"] > 17000
