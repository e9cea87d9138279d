"""Validation: row rules, quarantine, counts that add up, and Great Expectations suites + Data Docs.

Policy (one place: :func:`compute_flags` computes a boolean flag column per rule, :func:`decide`
turns flags into the single quarantine decision; GX only *reports* on those same flag columns).

Hard rules (quarantined in every split, priority order):

- ``text_missing``: the text is not a string (null, number, ...). For COIG-CQIA the text is the
  prompt ``instruction`` (+ ``"\\n"`` + ``input``).
- ``text_empty``: the text is empty or whitespace only.
- ``text_too_short`` / ``text_too_long``: stripped length outside
  ``[data.min_text_chars, data.max_text_chars]``.
- ``label_invalid`` (ToxiCN, COLD): the label is missing or not 0/1.
- ``fine_grained_label_invalid`` (COLD test): ``fine-grained-label`` not in {0, 1, 2, 3}.
- ``output_missing`` (COIG-CQIA): the reply is missing or blank (no assistant turn to learn).
- ``id_duplicate``: an id already seen in the same source (first copy kept).

Policy rules, among rows that pass the hard rules; they quarantine only in *training* splits
(ToxiCN train, COLD train, COIG-CQIA). Evaluation splits (ToxiCN test, COLD test) keep every row
that passes the hard rules so results stay comparable with the published study; their duplicates
and conflicts are counted as warnings in the summary and in Data Docs.

- ``leakage`` (when ``data.drop_train_leakage``): the training row's normalised text
  (:func:`chintox.textnorm.normalise`) equals the normalised text of a kept row of ToxiCN test or
  COLD test. Counted per (train split -> evaluation split) pair whether or not it is dropped.
- ``conflicting_label`` (when ``data.conflicting_labels == "drop"``): every copy of a normalised
  text, within one source and split, whose copies disagree on the label.
- ``duplicate_exact`` / ``duplicate_normalised`` (when ``data.duplicates == "drop"``): a later copy
  (file order) of an exact / normalised text already present in the same source and split; the
  first copy is kept. For COIG-CQIA the duplicate key is prompt *and* reply.

Warnings (never quarantine): ToxiCN ``length`` field != ``len(content)``
(``declared_length_mismatch``), COLD test fine-grained label inconsistent with the binary label,
duplicates/conflicts inside evaluation splits, texts shared by the two evaluation sets.

A row gets the first rule, in the order above (hard rules, then leakage, conflicting_label,
duplicate_exact, duplicate_normalised), that both flags it and is active. Every row read is either
kept (``<out>/validated/<source>.parquet``) or quarantined (``<out>/quarantine.jsonl``); the code
raises if ``rows_read != rows_kept + rows_quarantined`` for any source or split.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from chintox.logs import setup_logging
from chintox.textnorm import normalise_many
from tasks.ingest import RawFile, ingest

log = logging.getLogger(__name__)

SOURCES = ("toxicn", "cold", "cqia")
LABELLED = {"toxicn", "cold"}
EVAL_SPLITS = {("toxicn", "test"), ("cold", "test")}

HARD_RULES = [
    "text_missing",
    "text_empty",
    "text_too_short",
    "text_too_long",
    "label_invalid",
    "fine_grained_label_invalid",
    "output_missing",
    "id_duplicate",
]
POLICY_RULES = ["leakage", "conflicting_label", "duplicate_exact", "duplicate_normalised"]
RULES = HARD_RULES + POLICY_RULES
WARNING_FLAGS = ["declared_length_mismatch", "fine_grained_label_inconsistent", "eval_overlap"]

FLAG = "flag_"  # flag column prefix


class CountMismatchError(RuntimeError):
    """Rows read != rows kept + rows quarantined (a bug, never a data problem)."""


# --------------------------------------------------------------------------------------------
# rules


def _is_label(v: Any, allowed: set[int]) -> bool:
    if isinstance(v, bool) or v is None:
        return False
    if isinstance(v, int):
        return v in allowed
    if isinstance(v, float) and not math.isnan(v) and v.is_integer():
        return int(v) in allowed
    return False


def active_rules(data_cfg) -> set[str]:
    """The rules that quarantine under the configured policies."""
    active = set(HARD_RULES)
    if data_cfg.drop_train_leakage:
        active.add("leakage")
    if data_cfg.conflicting_labels == "drop":
        active.add("conflicting_label")
    if data_cfg.duplicates == "drop":
        active |= {"duplicate_exact", "duplicate_normalised"}
    return active


def hard_flags(df: pd.DataFrame, source: str, data_cfg) -> pd.DataFrame:
    """Add ``text_chars``, ``norm_text`` and the hard-rule flag columns to a copy of ``df``."""
    df = df.copy()
    text = df["text"].astype(object)
    is_str = text.map(lambda t: isinstance(t, str))
    stripped = text.map(lambda t: t.strip() if isinstance(t, str) else "")
    n_chars = stripped.str.len().astype("int64")
    df["text_chars"] = n_chars.where(is_str, -1)
    df[FLAG + "text_missing"] = ~is_str
    df[FLAG + "text_empty"] = is_str & (n_chars == 0)
    df[FLAG + "text_too_short"] = is_str & (n_chars > 0) & (n_chars < data_cfg.min_text_chars)
    df[FLAG + "text_too_long"] = is_str & (n_chars > data_cfg.max_text_chars)
    if source in LABELLED:
        df[FLAG + "label_invalid"] = ~df["label"].map(lambda v: _is_label(v, {0, 1})).astype(bool)
    else:
        df[FLAG + "label_invalid"] = False
    if source == "cold" and "fine_grained_label" in df:
        is_test = df["split"] == "test"
        fg_ok = df["fine_grained_label"].map(lambda v: _is_label(v, {0, 1, 2, 3})).astype(bool)
        df[FLAG + "fine_grained_label_invalid"] = is_test & ~fg_ok
    else:
        df[FLAG + "fine_grained_label_invalid"] = False
    if source == "cqia":
        out = df["output"].astype(object)
        df[FLAG + "output_missing"] = ~out.map(lambda t: isinstance(t, str) and bool(t.strip())).astype(bool)
    else:
        df[FLAG + "output_missing"] = False
    df[FLAG + "id_duplicate"] = df["id"].duplicated(keep="first")
    df["norm_text"] = normalise_many(text)
    return df


def _hard_ok(df: pd.DataFrame) -> pd.Series:
    bad = pd.Series(False, index=df.index)
    for r in HARD_RULES:
        bad |= df[FLAG + r]
    return ~bad


def eval_keys(flagged: dict[str, pd.DataFrame]) -> dict[str, dict[str, str]]:
    """``{"toxicn/test": {norm_text: first id}, "cold/test": {...}}`` over rows passing hard rules."""
    keys: dict[str, dict[str, str]] = {}
    for source, split in sorted(EVAL_SPLITS):
        df = flagged.get(source)
        d: dict[str, str] = {}
        if df is not None and len(df):
            sel = df[(df["split"] == split) & _hard_ok(df)]
            for norm, id_ in zip(sel["norm_text"], sel["id"]):
                d.setdefault(norm, id_)
        keys[f"{source}/{split}"] = d
    return keys


def policy_flags(df: pd.DataFrame, source: str, evals: dict[str, dict[str, str]]) -> pd.DataFrame:
    """Add leakage, conflict and duplicate flags (and the ids they point at) to ``df`` in place."""
    ok = _hard_ok(df)
    is_eval = df["split"].map(lambda s: (source, s) in EVAL_SPLITS).astype(bool)
    df["role"] = is_eval.map({True: "eval", False: "train"})

    # leakage: training rows whose normalised text is in an evaluation set
    df[FLAG + "leakage"] = False
    df["leak_into"] = None
    train_ok = ok & ~is_eval
    for name, keys in evals.items():
        hit = train_ok & df["norm_text"].map(lambda k, keys=keys: k in keys).astype(bool)
        df.loc[hit & df["leak_into"].isna(), "leak_into"] = name
        df[FLAG + "leakage"] |= hit
    # texts shared by two evaluation sets (warning only)
    df[FLAG + "eval_overlap"] = False
    for name, keys in evals.items():
        own = [f"{source}/{s}" for (src, s) in EVAL_SPLITS if src == source]
        if name in own:
            continue
        df[FLAG + "eval_overlap"] |= ok & is_eval & df["norm_text"].map(lambda k, keys=keys: k in keys).astype(bool)

    # duplicates and conflicts inside one split, among rows passing the hard rules
    sub = df[ok]
    if source == "cqia":
        out_norm = pd.Series(normalise_many(sub["output"].astype(object)), index=sub.index)
        exact_key = sub["text"].astype(str) + "\x1f" + sub["output"].astype(str)
        norm_key = sub["norm_text"].astype(str) + "\x1f" + out_norm.astype(str)
    else:
        exact_key = sub["text"].astype(str)
        norm_key = sub["norm_text"].astype(str)
    kf = pd.DataFrame({"split": sub["split"], "exact": exact_key, "norm": norm_key, "id": sub["id"]})
    exact_dup = kf.duplicated(["split", "exact"], keep="first")
    norm_dup = kf.duplicated(["split", "norm"], keep="first") & ~exact_dup
    first_id = kf.groupby(["split", "norm"], sort=False)["id"].transform("first")
    df[FLAG + "duplicate_exact"] = False
    df[FLAG + "duplicate_normalised"] = False
    df["duplicate_of"] = None
    df.loc[exact_dup[exact_dup].index, FLAG + "duplicate_exact"] = True
    df.loc[norm_dup[norm_dup].index, FLAG + "duplicate_normalised"] = True
    dup_idx = exact_dup[exact_dup | norm_dup].index
    df.loc[dup_idx, "duplicate_of"] = first_id.loc[dup_idx]
    df[FLAG + "conflicting_label"] = False
    df["conflict_labels"] = None
    if source in LABELLED and len(sub):
        lab = sub["label"].map(lambda v: int(v))
        g = pd.DataFrame({"split": sub["split"], "norm": sub["norm_text"], "label": lab})
        nun = g.groupby(["split", "norm"], sort=False)["label"].transform("nunique")
        conf = nun > 1
        df.loc[conf[conf].index, FLAG + "conflicting_label"] = True
        if conf.any():
            labels = g[conf].groupby(["split", "norm"], sort=False)["label"].transform(
                lambda s: json.dumps(sorted(s.value_counts().to_dict().items())))
            df.loc[labels.index, "conflict_labels"] = labels

    # warnings
    if source == "toxicn" and "declared_length" in df:
        dl = pd.to_numeric(df["declared_length"], errors="coerce")
        tl = df["text"].map(lambda t: len(t) if isinstance(t, str) else -1)
        df[FLAG + "declared_length_mismatch"] = ok & dl.notna() & (dl != tl)
    else:
        df[FLAG + "declared_length_mismatch"] = False
    if source == "cold" and "fine_grained_label" in df:
        def incons(lab, fg):
            if not (_is_label(lab, {0, 1}) and _is_label(fg, {0, 1, 2, 3})):
                return False
            return (int(lab) == 1) != (int(fg) in (1, 2))
        df[FLAG + "fine_grained_label_inconsistent"] = ok & (df["split"] == "test") & pd.Series(
            [incons(a, b) for a, b in zip(df["label"], df["fine_grained_label"])], index=df.index)
    else:
        df[FLAG + "fine_grained_label_inconsistent"] = False
    return df


def compute_flags(frames: dict[str, pd.DataFrame], data_cfg) -> dict[str, pd.DataFrame]:
    """Every rule's flag column for every source (the one implementation of the rules)."""
    flagged = {s: hard_flags(df, s, data_cfg) for s, df in frames.items()}
    evals = eval_keys(flagged)
    for s, df in flagged.items():
        policy_flags(df, s, evals)
    return flagged


def decide(df: pd.DataFrame, active: set[str]) -> pd.Series:
    """The quarantine rule of each row (``None`` = kept): first flagged *and* active rule.
    Policy rules act on training rows only."""
    rule = pd.Series([None] * len(df), index=df.index, dtype=object)
    train = df["role"] == "train"
    for r in RULES:
        if r not in active:
            continue
        hit = df[FLAG + r] & rule.isna()
        if r in POLICY_RULES:
            hit &= train
        rule[hit] = r
    return rule


def _reason(row: pd.Series, rule: str, data_cfg) -> str:
    if rule == "text_missing":
        return f"text is {type(row['text']).__name__ if row['text'] is not None else 'null'}, not a string"
    if rule == "text_empty":
        return "text is empty or whitespace only" if row["text"] else "text is empty"
    if rule == "text_too_short":
        return f"text has {row['text_chars']} chars after stripping < min_text_chars {data_cfg.min_text_chars}"
    if rule == "text_too_long":
        return f"text has {row['text_chars']} chars after stripping > max_text_chars {data_cfg.max_text_chars}"
    if rule == "label_invalid":
        return f"label {row['label']!r} is not 0 or 1"
    if rule == "fine_grained_label_invalid":
        return f"fine-grained-label {row['fine_grained_label']!r} is not one of 0, 1, 2, 3"
    if rule == "output_missing":
        return "the reply (output) is missing or blank"
    if rule == "id_duplicate":
        return f"id {row['id']} already used by an earlier row"
    if rule == "leakage":
        return f"normalised text also appears in evaluation set {row['leak_into']}"
    if rule == "conflicting_label":
        return f"copies of this (normalised) text in {row['source']}/{row['split']} disagree on the label: " \
               f"[label, copies] = {row['conflict_labels']}"
    if rule == "duplicate_exact":
        return f"exact duplicate of {row['duplicate_of']}"
    if rule == "duplicate_normalised":
        return f"duplicate of {row['duplicate_of']} after normalisation (NFKC, case, punctuation, spaces)"
    return rule


# --------------------------------------------------------------------------------------------
# Great Expectations (reporting only)


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


def run_gx(flagged: dict[str, pd.DataFrame], read_columns: dict[str, list[str]], data_cfg,
           active: set[str], docs_dir: Path) -> dict[str, Any]:
    """One suite, validation definition and checkpoint per source on an ephemeral context; Data
    Docs written to ``docs_dir`` (replaced each run)."""
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
    ctx.add_data_docs_site(site_name="chintox", site_config={
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir.resolve())},
    })
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


# --------------------------------------------------------------------------------------------
# outputs


def _jsonable(v: Any) -> Any:
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


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = df.reset_index(drop=True)
    for c in df.columns:
        try:
            pa.array(df[c], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            df[c] = df[c].map(lambda v: None if _jsonable(v) is None else str(v)).astype(object)
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(None), path)


def _kept_frame(df: pd.DataFrame, source: str) -> pd.DataFrame:
    drop = [c for c in df.columns if c.startswith(FLAG)] + [
        "duplicate_of", "leak_into", "conflict_labels", "role", "text_chars"]
    k = df.drop(columns=drop)
    if source in LABELLED:
        k["label"] = k["label"].map(int).astype("int64")
    return k


def _raw_files(files: list[RawFile], raw_dir: Path) -> list[dict[str, Any]]:
    out = []
    for f in files:
        try:
            rel = str(f.path.relative_to(raw_dir))
        except ValueError:
            rel = str(f.path)
        out.append({"source": f.source, "split": f.split, "path": rel, "sha256": f.sha256, "bytes": f.size})
    return out


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


def validate_frames(frames: dict[str, pd.DataFrame], data_cfg) -> tuple[dict[str, pd.DataFrame], dict[str, pd.Series]]:
    """Flags and quarantine decisions for ingested frames (no I/O, no GX): the testable core."""
    flagged = compute_flags(frames, data_cfg)
    active = active_rules(data_cfg)
    return flagged, {s: decide(df, active) for s, df in flagged.items()}


def quarantine_records(flagged: dict[str, pd.DataFrame], decisions: dict[str, pd.Series], data_cfg) -> list[dict]:
    recs: list[dict] = []
    meta = {"duplicate_of", "leak_into", "conflict_labels", "role", "text_chars", "norm_text"}
    for source, df in flagged.items():
        rule = decisions[source]
        q = df[rule.notna()]
        for idx, row in q.iterrows():
            r = rule[idx]
            rec = {"id": row["id"], "source": source, "split": row["split"], "file": row["file"],
                   "row": int(row["row"]), "rule": r, "reason": _reason(row, r, data_cfg), "text": row["text"]}
            for c, v in row.items():
                if c in rec or c.startswith(FLAG) or c in meta:
                    continue
                rec[c] = _jsonable(v)
            rec["text"] = _jsonable(rec["text"])
            recs.append(rec)
    return recs


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
        _write_parquet(_kept_frame(df[decisions[source].isna()], source), out_dir / "validated" / f"{source}.parquet")
    recs = quarantine_records(flagged, decisions, dc)
    with open(out_dir / "quarantine.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(rec, ensure_ascii=False, default=str) + "\n" for rec in recs)
    if len(recs) != summary["totals"]["rows_quarantined"]:
        raise CountMismatchError(f"quarantine file has {len(recs)} rows, summary says "
                                 f"{summary['totals']['rows_quarantined']}")

    if great_expectations:
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
