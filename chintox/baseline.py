"""The classical reference row of Table 1: character n-gram TF-IDF + logistic regression.

Trained on ToxiCN train only (the same split the detectors are tuned on), scored on the evaluation
sets with the same metric functions as the LLM detectors.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from chintox.metrics import binary_metrics, throughput


def _load(cfg: Any, name: str) -> list[dict]:
    from chintox.splits import load_split

    return load_split(cfg.data.out_dir, name)


def train_tfidf(texts: list[str], labels: list[int], seed: int = 0) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True, max_features=300_000),
        LogisticRegression(C=4.0, max_iter=2000, random_state=seed),
    )
    pipe.fit(texts, labels)
    return pipe


def run_tfidf_reference(cfg: Any, sets: list[str] | None = None) -> dict[str, Any]:
    """Fit on ToxiCN train; metrics (threshold 0.5) and samples/s on each evaluation set."""
    train = _load(cfg, "toxicn_train")
    t0 = time.perf_counter()
    model = train_tfidf([r["text"] for r in train], [int(r["label"]) for r in train], seed=cfg.data.seed)
    out: dict[str, Any] = {"train_seconds": round(time.perf_counter() - t0, 2), "n_train": len(train)}
    total_n, total_s = 0, 0.0
    for name in sets or cfg.evaluate.sets:
        recs = _load(cfg, name)
        t = time.perf_counter()
        scores = model.predict_proba([r["text"] for r in recs])[:, 1]
        total_s += time.perf_counter() - t
        total_n += len(recs)
        out[name] = binary_metrics(np.array([int(r["label"]) for r in recs]), scores, cfg.evaluate.threshold)
    out["speed"] = throughput(total_n, total_s, out["train_seconds"])
    return out
