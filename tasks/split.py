"""Splits: ToxiCN train -> train/val, the two evaluation sets, and the COIG-CQIA stage-1 chat records.

Inputs are the validated frames written by :func:`tasks.validate.run_validate`
(``<data.out_dir>/validated/*.parquet``); nothing here re-reads the raw data, so the split stage
depends only on the validated rows and the split parameters.

- ``toxicn_train`` / ``toxicn_val``: ToxiCN train, stratified on the label, seeded with
  ``data.seed``, ``data.val_fraction`` of each label class going to val. The unit of assignment is a
  *normalised-text group* (copies of one text, which exist only when ``data.duplicates: keep``), so
  copies never straddle train and val; a group's label is its first row's label. With
  ``duplicates: drop`` every group is one row and the split is a plain stratified row split.
- ``toxicn_test``, ``cold_test``: every validated row of ToxiCN test / COLD test, in file order.
- ``cold_train``: COLD train's texts without their labels, in file order (pre-training text for the
  tiny base; COLD stays a generalisation test: no label of it is ever trained on).
- ``stage1``: COIG-CQIA as chat records ``{id, messages: [user, assistant], subset, task_type,
  domain}``; when ``data.cqia_max_records`` is set, a seeded sample of that size (kept in file order).

The files' names, layout and row shapes belong to :mod:`chintox.splits`, which writes and reads
them: JSON lines in UTF-8, rows in file order, so the same seed and parameters give byte-identical
files; ``split_summary.json`` records counts, label balance, file hashes and the
train/evaluation text overlap (0 when ``data.drop_train_leakage`` is true).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chintox.logs import setup_logging
from chintox.splits import split_dir, write_split

log = logging.getLogger(__name__)

TOXICN_CATEGORIES = ("topic", "toxic_type", "expression", "target", "platform")
COLD_CATEGORIES = ("topic", "fine_grained_label")


class SplitError(RuntimeError):
    """A missing input or output of the split step."""


def _read_validated(out_dir: Path, source: str) -> pd.DataFrame:
    p = out_dir / "validated" / f"{source}.parquet"
    if not p.is_file():
        raise SplitError(f"{p} not found: run `chintox validate` (or `dvc repro validate`) first")
    return pd.read_parquet(p)


def _plain(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and np.isnan(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _decode_json(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return _plain(v)


def stratified_group_split(df: pd.DataFrame, val_fraction: float, seed: int) -> pd.Series:
    """Boolean Series (True = validation) over ``df`` (needs ``label`` and ``norm_text``)."""
    rng = np.random.default_rng(seed)
    groups = df.groupby("norm_text", sort=False)
    first = groups.head(1)[["norm_text", "label"]]  # file order of first appearance
    val_keys: set[str] = set()
    for label in sorted(first["label"].unique()):
        keys = first.loc[first["label"] == label, "norm_text"].to_numpy()
        n_val = round(len(keys) * val_fraction)
        if len(keys) > 1:
            n_val = min(max(n_val, 1), len(keys) - 1)
        else:
            n_val = 0
        order = rng.permutation(len(keys))
        val_keys.update(keys[order[:n_val]].tolist())
    return df["norm_text"].isin(val_keys)


def _labelled_records(df: pd.DataFrame, split: str, categories: tuple[str, ...]) -> list[dict[str, Any]]:
    recs = []
    cols = {c: df[c].tolist() if c in df else [None] * len(df) for c in categories}
    for i, (id_, text, label, source) in enumerate(zip(df["id"], df["text"], df["label"], df["source"])):
        rec = {"id": id_, "text": text, "label": int(label), "source": source, "split": split}
        for c in categories:
            v = cols[c][i]
            rec[c] = _decode_json(v) if c == "target" else _plain(v)
        if "fine_grained_label" in rec and rec["fine_grained_label"] is not None:
            rec["fine_grained_label"] = int(rec["fine_grained_label"])
        recs.append(rec)
    return recs


def stage1_records(cqia: pd.DataFrame, max_records: int | None, seed: int) -> tuple[list[dict], int]:
    """Chat records of the kept COIG-CQIA rows (seeded sample of ``max_records`` when set)."""
    n_available = len(cqia)
    if max_records is not None and max_records < n_available:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(n_available, size=max_records, replace=False))
        cqia = cqia.iloc[pick]
    recs = []
    for id_, text, output, subset, task, domain in zip(
            cqia["id"], cqia["text"], cqia["output"], cqia["subset"], cqia["task_type"], cqia["domain"]):
        recs.append({
            "id": id_,
            "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": output}],
            "subset": subset,
            "task_type": _decode_json(task),
            "domain": _decode_json(domain),
        })
    return recs, n_available


def _balance(recs: list[dict]) -> dict[str, Any]:
    n = len(recs)
    pos = sum(1 for r in recs if r["label"] == 1)
    return {"rows": n, "positive": pos, "negative": n - pos, "positive_rate": round(pos / n, 4) if n else None}


def run_split(cfg) -> dict[str, Any]:
    """Write ``<data.out_dir>/splits/*.jsonl`` and ``split_summary.json``; return the summary."""
    setup_logging()
    t0 = time.time()
    dc = cfg.data
    out_dir = Path(dc.out_dir)
    toxicn = _read_validated(out_dir, "toxicn")
    cold = _read_validated(out_dir, "cold")
    cqia = _read_validated(out_dir, "cqia")

    tox_train = toxicn[toxicn["split"] == "train"]
    is_val = stratified_group_split(tox_train, dc.val_fraction, dc.seed)
    frames = {
        "toxicn_train": (tox_train[~is_val], "train", TOXICN_CATEGORIES),
        "toxicn_val": (tox_train[is_val], "val", TOXICN_CATEGORIES),
        "toxicn_test": (toxicn[toxicn["split"] == "test"], "test", TOXICN_CATEGORIES),
        "cold_test": (cold[cold["split"] == "test"], "test", COLD_CATEGORIES),
    }
    summary: dict[str, Any] = {"splits": {}, "files": {}}
    for name, (df, split, cats) in frames.items():
        recs = _labelled_records(df, split, cats)
        summary["files"][name] = write_split(out_dir, name, recs)
        summary["splits"][name] = _balance(recs)
    cold_train = cold[cold["split"] == "train"]
    summary["files"]["cold_train"] = write_split(out_dir, "cold_train", [
        {"id": id_, "text": text, "source": source, "split": "train"}
        for id_, text, source in zip(cold_train["id"], cold_train["text"], cold_train["source"])])
    summary["splits"]["cold_train"] = {"rows": len(cold_train), "labels": "left out"}
    recs, n_available = stage1_records(cqia, dc.cqia_max_records, dc.seed)
    summary["files"]["stage1"] = write_split(out_dir, "stage1", recs)
    summary["splits"]["stage1"] = {"rows": len(recs), "available": n_available}

    train_keys = set(frames["toxicn_train"][0]["norm_text"])
    summary["train_overlap"] = {
        name: int(frames[name][0]["norm_text"].isin(train_keys).sum())
        for name in ("toxicn_val", "toxicn_test", "cold_test")
    }
    summary["params"] = {"seed": dc.seed, "val_fraction": dc.val_fraction, "cqia_max_records": dc.cqia_max_records}
    with open(out_dir / "split_summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=2)
        f.write("\n")
    log.info("splits written to %s in %.1fs: %s", split_dir(out_dir), time.time() - t0,
             {k: v["rows"] for k, v in summary["splits"].items()})
    return summary

