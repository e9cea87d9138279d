"""Quarantine accounting: the kept frames, the quarantine records and the per-source counts.

Every row read is either kept or quarantined, by the decisions of :mod:`chintox.validation.rules`;
:func:`summarise` raises :class:`CountMismatchError` if ``rows_read != rows_kept + rows_quarantined``
for any source or split, and the step checks the quarantine file against the same totals.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from chintox.validation.rules import FLAG, LABELLED, RULES, WARNING_FLAGS, reason


class CountMismatchError(RuntimeError):
    """Rows read != rows kept + rows quarantined (a bug, never a data problem)."""


def jsonable(v: Any) -> Any:
    """``v`` as a plain JSON value (numpy scalars unwrapped, NaN as ``None``)."""
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return str(v)
    return v


def kept_frame(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """The frame written for ``source``: its kept rows without rule flags and bookkeeping."""
    drop = [c for c in df.columns if c.startswith(FLAG)] + [
        "duplicate_of", "leak_into", "conflict_labels", "role", "text_chars"]
    k = df.drop(columns=drop)
    if source in LABELLED:
        k["label"] = k["label"].map(int).astype("int64")
    return k


def summarise(flagged: dict[str, pd.DataFrame], decisions: dict[str, pd.Series]) -> dict[str, Any]:
    """Per-source counts; raises :class:`CountMismatchError` if read != kept + quarantined."""
    sources: dict[str, Any] = {}
    leakage: dict[str, int] = {}
    for source, df in flagged.items():
        rule = decisions[source]
        if not rule.index.equals(df.index):
            raise CountMismatchError(f"{source}: {len(df)} rows read but {len(rule)} decisions")
        q = rule.notna()
        read, n_q = len(df), int(q.sum())
        kept = int((~q).sum())
        by_split = {}
        for split, idx in df.groupby("split", sort=True).groups.items():
            s_read, s_q = len(idx), int(q.loc[idx].sum())
            s_kept = int((~q.loc[idx]).sum())
            if s_read != s_kept + s_q:
                raise CountMismatchError(f"{source}/{split}: read {s_read} != kept {s_kept} + quarantined {s_q}")
            by_split[str(split)] = {"rows_read": s_read, "rows_kept": s_kept, "rows_quarantined": s_q}
        if read != kept + n_q or read != sum(v["rows_read"] for v in by_split.values()):
            raise CountMismatchError(f"{source}: read {read} != kept {kept} + quarantined {n_q}")
        role = df["role"]
        flagged_counts = {}
        for r in RULES:
            f = df[FLAG + r]
            flagged_counts[r] = {"train": int((f & (role == "train")).sum()), "eval": int((f & (role == "eval")).sum())}
        splits = sorted(df["split"].unique())

        def per_split(mask: pd.Series, df: pd.DataFrame = df, splits: list = splits) -> dict[str, int]:
            return {str(sp): int((mask & (df["split"] == sp)).sum()) for sp in splits}

        warnings = {w: per_split(df[FLAG + w]) for w in WARNING_FLAGS}
        for r in ("duplicate_exact", "duplicate_normalised", "conflicting_label"):
            warnings[f"eval_{r}"] = per_split(df[FLAG + r] & (role == "eval"))
        for split in sorted(df["split"].unique()):
            hit = df[FLAG + "leakage"] & (df["split"] == split)
            for target, n in df.loc[hit, "leak_into"].value_counts().sort_index().items():
                leakage[f"{source}/{split} -> {target}"] = int(n)
        sources[source] = {
            "rows_read": read,
            "rows_kept": kept,
            "rows_quarantined": n_q,
            "by_split": by_split,
            "quarantined_by_rule": {r: int((rule == r).sum()) for r in RULES if (rule == r).any()},
            "flagged_by_rule": flagged_counts,
            "warnings": warnings,
        }
    totals = {k: sum(s[k] for s in sources.values()) for k in ("rows_read", "rows_kept", "rows_quarantined")}
    if totals["rows_read"] != totals["rows_kept"] + totals["rows_quarantined"]:
        raise CountMismatchError(f"totals do not add up: {totals}")
    return {"sources": sources, "totals": totals, "leakage": leakage}


def quarantine_records(flagged: dict[str, pd.DataFrame], decisions: dict[str, pd.Series], data_cfg) -> list[dict]:
    """One record per quarantined row: where it came from, the rule, the reason, its read columns."""
    recs: list[dict] = []
    meta = {"duplicate_of", "leak_into", "conflict_labels", "role", "text_chars", "norm_text"}
    for source, df in flagged.items():
        rule = decisions[source]
        q = df[rule.notna()]
        for idx, row in q.iterrows():
            r = rule[idx]
            rec = {"id": row["id"], "source": source, "split": row["split"], "file": row["file"],
                   "row": int(row["row"]), "rule": r, "reason": reason(row, r, data_cfg), "text": row["text"]}
            for c, v in row.items():
                if c in rec or c.startswith(FLAG) or c in meta:
                    continue
                rec[c] = jsonable(v)
            rec["text"] = jsonable(rec["text"])
            recs.append(rec)
    return recs
