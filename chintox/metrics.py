"""Detector metrics: accuracy, precision, recall, F1 (positive = toxic), AUC from scores and the
study's "AUC from hard labels", seeded bootstrap 95% intervals, per-slice metrics, threshold tuning.

Plain numpy (no scikit-learn at import); ``tests/unit/evaluate/test_metrics.py`` checks each function
against scikit-learn on fixed inputs. Precision/recall/F1 of an empty denominator are 0 (sklearn's
``zero_division=0``); AUC of a one-class sample is NaN.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CORE = ("accuracy", "precision", "recall", "f1", "auc", "auc_hard")

# Readable names for coded slice values (ToxiCN / COLD codes).
SLICE_NAMES: dict[str, dict[Any, str]] = {
    "toxic_type": {0: "non_toxic", 1: "offensive", 2: "hate"},
    "expression": {0: "non_hate", 1: "explicit", 2: "implicit", 3: "reporting"},
    "fine_grained_label": {0: "other", 1: "attack_individual", 2: "attack_group", 3: "anti_bias"},
}
SLICES = {
    "toxicn": ("topic", "toxic_type", "expression"),
    "cold": ("topic", "fine_grained_label"),
}


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp)."""
    y, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp = int(np.sum(y & p))
    fp = int(np.sum(~y & p))
    fn = int(np.sum(y & ~p))
    tn = int(np.sum(~y & ~p))
    return tn, fp, fn, tp


def _div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def label_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    tn, fp, fn, tp = confusion(np.asarray(y_true), np.asarray(y_pred))
    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    return {
        "accuracy": _div(tp + tn, tn + fp + fn + tp),
        "precision": precision,
        "recall": recall,
        "f1": _div(2 * precision * recall, precision + recall),
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # boundaries of tie groups
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def roc_auc(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN when only one class is present."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _ranks(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_metrics(y_true: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> dict[str, float]:
    """Label metrics at ``threshold`` (score >= threshold is toxic), AUC from scores, and the study's
    AUC from the hard labels (= balanced accuracy)."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    pred = (s >= threshold).astype(int)
    out = label_metrics(y, pred)
    out["auc"] = roc_auc(y, s)
    # ROC AUC of 0/1 predictions = (TPR + TNR) / 2 (one operating point), NaN for one class.
    tn, fp, fn, tp = confusion(y, pred)
    out["auc_hard"] = (tp / (tp + fn) + tn / (tn + fp)) / 2 if (tp + fn) and (tn + fp) else float("nan")
    return out


def bootstrap_ci(y_true: Sequence[int], scores: Sequence[float], threshold: float = 0.5,
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of every metric in :func:`binary_metrics` (seeded)."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if len(y) == 0 or n_boot <= 0:
        return {k: [float("nan"), float("nan")] for k in CORE}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = defaultdict(list)
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        for k, v in binary_metrics(y[idx], s[idx], threshold).items():
            draws[k].append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out = {}
    for k in CORE:
        arr = np.asarray(draws[k], dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        out[k] = [float(np.percentile(arr, lo)), float(np.percentile(arr, hi))] if len(arr) else [
            float("nan"), float("nan")]
    return out


def tune_threshold(y_true: Sequence[int], scores: Sequence[float], metric: str = "f1") -> float:
    """The threshold (among the observed scores and 0.5) maximising ``metric`` (ties: closest to 0.5)."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    cands = np.unique(np.r_[s, 0.5])
    best, best_t = -1.0, 0.5
    for t in cands:
        v = label_metrics(y, (s >= t).astype(int))[metric]
        if v > best + 1e-12 or (abs(v - best) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best, best_t = v, float(t)
    return best_t


def slice_name(key: str, value: Any) -> str:
    names = SLICE_NAMES.get(key, {})
    try:
        return names.get(int(value), str(value)) if names else str(value)
    except (TypeError, ValueError):
        return str(value)


def slice_metrics(records: Sequence[Mapping[str, Any]], scores: Sequence[float], threshold: float,
                  keys: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """{key: {value: {n, n_toxic, accuracy, precision, recall, f1, mean_score}}} for each slice key
    present in the records (rows without the key are skipped)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray([int(r["label"]) for r in records])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key in keys:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            if key in r and r[key] is not None:
                groups[slice_name(key, r[key])].append(i)
        if not groups:
            continue
        out[key] = {}
        for value, idx in sorted(groups.items()):
            ii = np.asarray(idx)
            m = label_metrics(y[ii], (s[ii] >= threshold).astype(int))
            out[key][value] = {"n": len(ii), "n_toxic": int(y[ii].sum()), **m,
                               "mean_score": float(s[ii].mean())}
    return out


def throughput(n: int, seconds: float, startup_seconds: float) -> dict[str, float]:
    """samples/s excluding start-up, and start-up time separately."""
    return {
        "samples_per_s": float(n / seconds) if seconds > 0 else float("nan"),
        "scoring_seconds": float(seconds),
        "startup_seconds": float(startup_seconds),
        "n": int(n),
    }


def rounded(d: Any, ndigits: int = 4) -> Any:
    """Round floats in nested dicts/lists (stable, readable metrics.json); NaN becomes None."""
    if isinstance(d, dict):
        return {k: rounded(v, ndigits) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [rounded(v, ndigits) for v in d]
    if isinstance(d, (float, np.floating)):
        return None if math.isnan(float(d)) else round(float(d), ndigits)
    if isinstance(d, np.integer):
        return int(d)
    return d


def flatten_metrics(obj: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested metrics mapping as ``a.b.c`` keys (booleans, strings, None and NaN
    are left out): what MLflow logs and what registered versions carry as ``metrics.*`` tags."""
    out: dict[str, float] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten_metrics(v, f"{prefix}{k}."))
    elif (isinstance(obj, (int, float, np.integer, np.floating)) and not isinstance(obj, (bool, np.bool_))
          and not math.isnan(float(obj))):
        out[prefix[:-1]] = float(obj)
    return out


GATE_VARIANTS = ("tuned", "default")  # metrics.json: <set>.tuned.* at the detector's own threshold


def find_metric_key(flat: Mapping[str, Any], eval_set: str, metric: str) -> str | None:
    """The key of ``metric`` on ``eval_set`` in flattened metrics, preferring the value at the
    detector's own (tuned) threshold, which is what the registered pyfunc uses: ``set.tuned.metric``,
    ``set.default.metric``, ``set.metric`` (also with ``_`` or ``/``, or under a prefix); else None."""
    candidates = [f"{eval_set}.{v}.{metric}" for v in GATE_VARIANTS]
    candidates += [f"{eval_set}{sep}{metric}" for sep in (".", "_", "/")]
    for c in candidates:
        if c in flat:
            return c
    for c in candidates:
        for k in sorted(flat, key=len):
            if k.endswith(f".{c}"):
                return k
    return None
