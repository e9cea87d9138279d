"""The Great Expectations report of a feedback import, and its Data Docs.

GX only *reports* on decisions already taken by :mod:`chintox.feedback.rules`: the frame it validates
has one row per data row of the imported file and one boolean column ``flag_<rule>`` per rule (True
on the rows quarantined under that rule), so each expectation's unexpected count is that rule's
quarantined count and the Data Docs cannot disagree with the quarantine file. Great Expectations is
imported inside :func:`run_feedback_gx` (it takes seconds), never at module import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from chintox.feedback.rules import RULES, Decision

log = logging.getLogger(__name__)
FLAG = "flag_"
SUITE = "feedback_import_suite"


def flag_frame(decisions: Sequence[Decision]) -> pd.DataFrame:
    """What GX sees: the data row, whether it was accepted, its label (accepted rows) and the flags."""
    df = pd.DataFrame({
        "row": pd.Series([d.row for d in decisions], dtype="int64"),
        "accepted": pd.Series([d.rule is None for d in decisions], dtype=bool),
        "label": pd.Series([d.label for d in decisions], dtype="Int64"),
    })
    for r in RULES:
        df[FLAG + r] = pd.Series([d.rule == r for d in decisions], dtype=bool)
    return df


def _expectations(gx) -> list:
    E = gx.expectations
    ex = [
        E.ExpectColumnValuesToBeUnique(column="row", description="each data row is decided once"),
        E.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1],
                                      description="accepted corrections are labelled 0 or 1"),
    ]
    for r in RULES:
        ex.append(E.ExpectColumnValuesToBeInSet(
            column=FLAG + r, value_set=[False], meta={"rule": r},
            description=f"rule {r}: flagged rows are quarantined (quarantine.jsonl)"))
    return ex


def run_feedback_gx(decisions: Sequence[Decision], docs_dir: Path, name: str) -> dict[str, Any]:
    """Validate the flag frame of one import on an ephemeral context; Data Docs in ``docs_dir``
    (replaced). Returns success and, per expectation, its column, rule and unexpected count."""
    from chintox.validation.gx import docs_context

    t0 = time.time()
    gx, ctx = docs_context(docs_dir, "feedback")
    bd = ctx.data_sources.add_pandas("feedback").add_dataframe_asset(name=name) \
        .add_batch_definition_whole_dataframe("all_rows")
    suite = ctx.suites.add(gx.ExpectationSuite(name=SUITE))
    for e in _expectations(gx):
        suite.add_expectation(e)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="feedback_import", data=bd, suite=suite))
    cp = ctx.checkpoints.add(gx.Checkpoint(
        name="feedback_import_checkpoint", validation_definitions=[vd],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["feedback"])],
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10}))
    vr = next(iter(cp.run(batch_parameters={"dataframe": flag_frame(decisions)}).run_results.values()))
    results = [{
        "expectation": r.expectation_config.type,
        "column": r.expectation_config.kwargs.get("column"),
        "rule": (r.expectation_config.meta or {}).get("rule"),
        "success": bool(r.success),
        "unexpected_count": int(r.result.get("unexpected_count") or 0),
    } for r in vr.results]
    log.info("feedback GX report and Data Docs in %.1fs", time.time() - t0)
    return {"success": bool(vr.success), "expectations": len(results), "results": results,
            "docs": str(docs_dir / "index.html")}


__all__ = ["FLAG", "SUITE", "flag_frame", "run_feedback_gx"]
