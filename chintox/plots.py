"""Evaluation plots per set: ROC, precision-recall, confusion matrix, score histogram.

Each plot is written twice: a PNG (MLflow artifact, reports/plots/<set>/*.png) and a small data file
that DVC renders (``dvc plots show``): roc.csv (fpr, tpr), pr.csv (recall, precision),
hist.csv (bin, toxic, non_toxic) and confusion.csv (actual, predicted: DVC's confusion template).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def _save(fig, path: Path) -> Path:
    """Lay out, write as PNG and close a figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curves(y: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    prec, rec, _ = precision_recall_curve(y, s)
    return {"fpr": fpr, "tpr": tpr, "precision": prec, "recall": rec}


def _thin(*cols: np.ndarray, max_points: int = 500) -> list[np.ndarray]:
    n = len(cols[0])
    if n <= max_points:
        return list(cols)
    idx = np.unique(np.r_[np.linspace(0, n - 1, max_points).astype(int), n - 1])
    return [c[idx] for c in cols]


def _write_csv(path: Path, header: list[str], rows: Any) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([round(float(v), 6) if isinstance(v, (float, np.floating)) else v for v in r])


def write_plots(set_name: str, y_true: Any, scores: Any, threshold: float, out_dir: str | Path,
                title: str = "") -> dict[str, Path]:
    """Write the four PNGs and the DVC plot data for one evaluation set; returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chintox.metrics import confusion, roc_auc

    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    d = Path(out_dir) / set_name
    d.mkdir(parents=True, exist_ok=True)
    tag = f"{set_name}{' - ' + title if title else ''}"
    paths: dict[str, Path] = {}
    two_classes = len(np.unique(y)) == 2

    # ROC
    fig, ax = plt.subplots(figsize=(5, 5))
    if two_classes:
        c = _curves(y, s)
        fpr, tpr = _thin(c["fpr"], c["tpr"])
        _write_csv(d / "roc.csv", ["fpr", "tpr"], zip(fpr, tpr))
        ax.plot(c["fpr"], c["tpr"], lw=2, label=f"AUC = {roc_auc(y, s):.3f}")
        rec, prec = _thin(c["recall"], c["precision"])
        _write_csv(d / "pr.csv", ["recall", "precision"], zip(rec, prec))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="chance")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=f"ROC: {tag}",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    paths["roc"] = _save(fig, d / "roc.png")

    # Precision-recall
    fig, ax = plt.subplots(figsize=(5, 5))
    if two_classes:
        ax.plot(c["recall"], c["precision"], lw=2)
    ax.axhline(y.mean() if len(y) else 0, ls="--", color="grey", lw=1, label=f"base rate {y.mean():.2f}")
    ax.set(xlabel="Recall (toxic)", ylabel="Precision (toxic)", title=f"Precision-recall: {tag}",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    paths["pr"] = _save(fig, d / "pr.png")

    # Confusion matrix at the threshold
    pred = (s >= threshold).astype(int)
    _write_csv(d / "confusion.csv", ["actual", "predicted"], zip(y, pred))
    tn, fp, fn, tp = confusion(y, pred)
    m = np.array([[tn, fp], [fn, tp]])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > m.max() / 2 else "black", fontsize=13)
    ax.set_xticks([0, 1], ["non-toxic", "toxic"])
    ax.set_yticks([0, 1], ["non-toxic", "toxic"])
    ax.set(xlabel="Predicted", ylabel="Actual", title=f"Confusion @ {threshold:.3f}: {set_name}")
    paths["confusion"] = _save(fig, d / "confusion.png")

    # Score histogram by true class
    bins = np.linspace(0, 1, 41)
    h_pos, _ = np.histogram(s[y == 1], bins=bins)
    h_neg, _ = np.histogram(s[y == 0], bins=bins)
    _write_csv(d / "hist.csv", ["bin", "toxic", "non_toxic"],
               zip(np.round((bins[:-1] + bins[1:]) / 2, 4), h_pos, h_neg))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(s[y == 0], bins=bins, alpha=0.6, label=f"non-toxic (n={int((y == 0).sum())})")
    ax.hist(s[y == 1], bins=bins, alpha=0.6, label=f"toxic (n={int((y == 1).sum())})")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="score = p(yes) / (p(yes) + p(no))", ylabel="texts", title=f"Scores: {tag}", xlim=(0, 1))
    ax.legend()
    paths["hist"] = _save(fig, d / "hist.png")
    return paths
