"""The Great Expectations report: one suite per source over the rule flags, and the Data Docs.

GX only *reports*: every expectation reads a flag column computed by :mod:`chintox.validation.rules`
(or a read column), so the Data Docs and the quarantine file cannot disagree. Great Expectations is
imported inside :func:`run_gx` (it takes seconds), never at module import.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from chintox.validation.rules import FLAG, HARD_RULES, LABELLED, POLICY_RULES, WARNING_FLAGS

log = logging.getLogger(__name__)


def _gx_frame(df: pd.DataFrame) -> pd.DataFrame:
    """What GX sees: the read columns plus the rule flags (objects made plain for GX)."""
    g = df.copy()
    for c in ("duplicate_of", "leak_into", "conflict_labels"):
        g.pop(c)
    return g


def _suite_expectations(gx, source: str, read_columns: list[str], data_cfg, active: set[str]):
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    train, evals = Column("role") == "train", Column("role") == "eval"
    ex = [
        E.ExpectTableColumnsToMatchSet(column_set=read_columns, exact_match=False,
                                       description="schema: the columns ingest must produce"),
        E.ExpectColumnValuesToBeInTypeList(column="row", type_list=["int64", "int", "Int64"],
                                           description="type: row numbers are integers"),
        E.ExpectColumnValuesToNotBeNull(column="text", description="text present (rule text_missing)"),
        E.ExpectColumnValuesToBeUnique(column="id", description="unique ids (rule id_duplicate)"),
        E.ExpectColumnValuesToBeBetween(column="text_chars", min_value=data_cfg.min_text_chars,
                                        max_value=data_cfg.max_text_chars,
                                        description="stripped text length within bounds"),
    ]
    if source in LABELLED:
        ex += [
            E.ExpectColumnValuesToNotBeNull(column="label", description="label present"),
            E.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1], description="label in {0, 1}"),
        ]
    for r in HARD_RULES:
        ex.append(E.ExpectColumnValuesToBeInSet(
            column=FLAG + r, value_set=[False], meta={"rule": r, "quarantine": True},
            description=f"rule {r}: flagged rows are quarantined"))
    for r in POLICY_RULES:
        if r in ("conflicting_label",) and source not in LABELLED:
            continue
        q = r in active
        ex.append(E.ExpectColumnValuesToBeInSet(
            column=FLAG + r, value_set=[False], row_condition=train,
            severity="critical" if q else "warning", meta={"rule": r, "role": "train", "quarantine": q},
            description=f"rule {r} on training rows: " + ("quarantined" if q else "kept (policy: keep)")))
        if r != "leakage":
            ex.append(E.ExpectColumnValuesToBeInSet(
                column=FLAG + r, value_set=[False], row_condition=evals, severity="warning",
                meta={"rule": r, "role": "eval", "quarantine": False},
                description=f"rule {r} on evaluation rows: reported, kept for comparability"))
    for w in WARNING_FLAGS:
        ex.append(E.ExpectColumnValuesToBeInSet(
            column=FLAG + w, value_set=[False], severity="warning", meta={"rule": w, "quarantine": False},
            description=f"warning {w}: reported only"))
    return ex


def docs_context(docs_dir: Path, site_name: str) -> tuple[Any, Any]:
    """``(great_expectations, an ephemeral context)`` whose Data Docs site is ``docs_dir`` (emptied
    first); progress bars and analytics off. Every GX report of the project starts here."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    t0 = time.time()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    log.info("great_expectations imported in %.1fs", time.time() - t0)
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    docs_dir.mkdir(parents=True)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    ctx.add_data_docs_site(site_name=site_name, site_config={
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
    })
    return gx, ctx


def run_gx(flagged: dict[str, pd.DataFrame], read_columns: dict[str, list[str]], data_cfg,
           active: set[str], docs_dir: Path) -> dict[str, Any]:
    """One suite, validation definition and checkpoint per source on an ephemeral context; Data
    Docs written to ``docs_dir`` (replaced each run)."""
    t0 = time.time()
    gx, ctx = docs_context(docs_dir, "chintox")
    ds = ctx.data_sources.add_pandas("chintox_raw")
    out: dict[str, Any] = {}
    for source, df in flagged.items():
        asset = ds.add_dataframe_asset(name=source)
        bd = asset.add_batch_definition_whole_dataframe(f"{source}_all_rows")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{source}_suite"))
        for e in _suite_expectations(gx, source, read_columns[source], data_cfg, active):
            suite.add_expectation(e)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{source}_validation", data=bd, suite=suite))
        cp = ctx.checkpoints.add(gx.Checkpoint(
            name=f"{source}_checkpoint", validation_definitions=[vd],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["chintox"])],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10}))
        res = cp.run(batch_parameters={"dataframe": _gx_frame(df)})
        vr = next(iter(res.run_results.values()))
        failed = []
        for r in vr.results:
            if not r.success:
                cfg = r.expectation_config
                failed.append({
                    "expectation": cfg.type,
                    "column": cfg.kwargs.get("column"),
                    "rule": (cfg.meta or {}).get("rule"),
                    "role": (cfg.meta or {}).get("role"),
                    "severity": str(getattr(cfg.severity, "value", cfg.severity)),
                    "unexpected_count": r.result.get("unexpected_count"),
                })
        out[source] = {
            "success": bool(vr.success),
            "expectations": len(vr.results),
            "failed": failed,
            "critical_failures": sum(1 for f in failed if f["severity"] == "critical"),
        }
    log.info("GX suites validated and Data Docs built in %.1fs", time.time() - t0)
    return out
