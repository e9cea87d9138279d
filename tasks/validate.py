"""The `validate` step: ingest the raw data, apply the row rules, write the kept rows, the quarantined
rows, the summary (DVC metrics) and the Great Expectations Data Docs.

Where each concern lives:

- reading the raw files (a file that cannot be read stops the run): :mod:`tasks.ingest`;
- the row rules, their priority and the policies (``data.duplicates``, ``data.conflicting_labels``,
  ``data.drop_train_leakage``, text length bounds): :mod:`chintox.validation.rules`;
- quarantine records and the counts that must add up: :mod:`chintox.validation.quarantine`;
- the GX suites (reporting on the same rule flags) and the Data Docs: :mod:`chintox.validation.gx`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from chintox.logs import setup_logging
from chintox.validation.quarantine import (
    CountMismatchError,
    jsonable,
    kept_frame,
    quarantine_records,
    summarise,
)
from chintox.validation.rules import active_rules, validate_frames
from tasks.ingest import RawFile, ingest

log = logging.getLogger(__name__)


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = df.reset_index(drop=True)
    for c in df.columns:
        try:
            pa.array(df[c], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            df[c] = df[c].map(lambda v: None if jsonable(v) is None else str(v)).astype(object)
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(None), path)


def _raw_files(files: list[RawFile], raw_dir: Path) -> list[dict[str, Any]]:
    out = []
    for f in files:
        try:
            rel = str(f.path.relative_to(raw_dir))
        except ValueError:
            rel = str(f.path)
        out.append({"source": f.source, "split": f.split, "path": rel, "sha256": f.sha256, "bytes": f.size})
    return out


def run_validate(cfg, *, great_expectations: bool = True) -> dict[str, Any]:
    """Ingest ``data.raw_dir``, flag and quarantine rows, write the validated frames, the quarantine
    file, the summary (DVC metrics) and GX Data Docs. Returns the summary.

    ``great_expectations=False`` skips only the GX report (suites + Data Docs); the quarantine
    decisions never depend on GX. Tests use it to stay fast; the CLI and DVC always run GX."""
    setup_logging()
    t0 = time.time()
    dc = cfg.data
    raw_dir = Path(dc.raw_dir)
    out_dir = Path(dc.out_dir)
    frames, files = ingest(raw_dir)
    log.info("ingested %s in %.1fs", {k: len(v) for k, v in frames.items()}, time.time() - t0)
    read_columns = {s: list(df.columns) for s, df in frames.items()}
    flagged, decisions = validate_frames(frames, dc)
    log.info("rules applied in %.1fs", time.time() - t0)

    summary = summarise(flagged, decisions)
    (out_dir / "validated").mkdir(parents=True, exist_ok=True)
    for source, df in flagged.items():
        _write_parquet(kept_frame(df[decisions[source].isna()], source), out_dir / "validated" / f"{source}.parquet")
    recs = quarantine_records(flagged, decisions, dc)
    with open(out_dir / "quarantine.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(rec, ensure_ascii=False, default=str) + "\n" for rec in recs)
    if len(recs) != summary["totals"]["rows_quarantined"]:
        raise CountMismatchError(f"quarantine file has {len(recs)} rows, summary says "
                                 f"{summary['totals']['rows_quarantined']}")

    if great_expectations:
        from chintox.validation.gx import run_gx

        docs_dir = Path(cfg.paths.reports) / "data_docs"
        summary["great_expectations"] = run_gx(flagged, read_columns, dc, active_rules(dc), docs_dir)
        summary["data_docs"] = str(docs_dir / "index.html")
    summary["policy"] = {k: getattr(dc, k) for k in (
        "duplicates", "conflicting_labels", "drop_train_leakage", "min_text_chars", "max_text_chars")}
    summary["raw_files"] = _raw_files(files, raw_dir)
    with open(out_dir / "validation_summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=2, sort_keys=False)
        f.write("\n")
    log.info("validation done in %.1fs: %s", time.time() - t0, summary["totals"])
    return summary
