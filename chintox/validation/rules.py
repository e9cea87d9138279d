"""The validation rules: one flag column per rule, and the one quarantine decision per row.

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
kept (``<out>/validated/<source>.parquet``) or quarantined (``<out>/quarantine.jsonl``); the
accounting that checks ``rows_read == rows_kept + rows_quarantined`` for every source and split is
:mod:`chintox.validation.quarantine`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from chintox.textnorm import normalise_many

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


def validate_frames(frames: dict[str, pd.DataFrame], data_cfg) -> tuple[dict[str, pd.DataFrame], dict[str, pd.Series]]:
    """Flags and quarantine decisions for ingested frames (no I/O, no GX): the testable core."""
    flagged = compute_flags(frames, data_cfg)
    active = active_rules(data_cfg)
    return flagged, {s: decide(df, active) for s, df in flagged.items()}


def reason(row: pd.Series, rule: str, data_cfg) -> str:
    """The quarantine file's human-readable reason for ``row`` breaking ``rule``."""
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
