"""The Great Expectations report: one suite per source, Data Docs HTML, failures matching the flags."""

from __future__ import annotations

import json
from pathlib import Path

from rawfix import TOXICN_TRAIN, write_raw
from testutil import micro_config

from tasks.validate import run_validate


def test_gx_suites_and_data_docs(tmp_path):
    rows = list(TOXICN_TRAIN) + [("", 0), ("你们地域黑真的好无聊", 1), ("有效的句子", 2)]
    raw = write_raw(tmp_path / "raw", toxicn_train=rows)
    cfg = micro_config(tmp_path, **{"data.raw_dir": str(raw)})
    summary = run_validate(cfg)
    docs = Path(cfg.paths.reports) / "data_docs"
    assert (docs / "index.html").is_file()
    html = (docs / "index.html").read_text(encoding="utf-8")
    for suite in ("toxicn_suite", "cold_suite", "cqia_suite"):
        assert suite in html
    gx = summary["great_expectations"]
    assert set(gx) == {"toxicn", "cold", "cqia"}
    assert gx["cold"]["success"] and gx["cqia"]["success"]
    failed = {f["rule"]: f["unexpected_count"] for f in gx["toxicn"]["failed"] if f["rule"]}
    # the three rows added above break three rules: an empty text, a label of 2, a copy of a train
    # row; the rule functions quarantine exactly those, and GX reports exactly what they quarantined
    expected = {"text_empty": 1, "label_invalid": 1, "duplicate_exact": 1}
    assert summary["sources"]["toxicn"]["quarantined_by_rule"] == expected
    assert failed == expected
    # GX's own checks on the raw columns (no rule flag involved) see the empty text and the bad label
    raw = {f["column"]: f["unexpected_count"] for f in gx["toxicn"]["failed"] if not f["rule"]}
    assert raw == {"text_chars": 1, "label": 1}, gx["toxicn"]["failed"]
    on_disk = json.loads((Path(cfg.data.out_dir) / "validation_summary.json").read_text(encoding="utf-8"))
    assert on_disk["totals"] == summary["totals"]
