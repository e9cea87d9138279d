"""Scoring evaluation sets with one scorer: the engine under the evaluate step and Table 1.

:func:`evaluate_scorer` scores each named split with a :class:`chintox.scoring.Scorer` and returns,
per set, the metrics at the default and the tuned threshold, truncation / empty-text counts and
samples/s (``speed``: start-up excluded), the details (bootstrap 95% intervals, slices, encode stats,
the generate-and-parse mode when asked), and writes ``<out>/predictions/<set>.csv`` and the plots.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from chintox.metrics import SLICES, binary_metrics, bootstrap_ci, slice_metrics, throughput

SET_KIND = {"toxicn_test": "toxicn", "toxicn_val": "toxicn", "toxicn_train": "toxicn", "cold_test": "cold"}


def load_set(cfg: Any, name: str) -> list[dict]:
    from chintox.splits import load_split

    return load_split(cfg.data.out_dir, name)


def set_sha256(cfg: Any, name: str) -> str:
    """sha256 of the split file ``name`` (what an evaluation of that set read)."""
    from chintox.provenance import file_sha256
    from chintox.splits import split_path

    return file_sha256(split_path(cfg.data.out_dir, name))


def _write_predictions(path: Path, recs: list[dict], scores: np.ndarray, t_default: float,
                       t_tuned: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "score", "pred", "pred_tuned"])
        for r, s in zip(recs, scores):
            w.writerow([r.get("id", ""), int(r["label"]), round(float(s), 6), int(s >= t_default),
                        int(s >= t_tuned)])


def evaluate_scorer(cfg: Any, scorer: Any, sets: list[str], out_dir: Path, t_default: float,
                    t_tuned: float, plots: bool = True, generate: bool = False,
                    title: str = "") -> tuple[dict[str, Any], dict[str, Any], list[Path]]:
    """Score ``sets`` with ``scorer``; returns (metrics, details, png paths)."""
    from chintox.plots import write_plots

    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    pngs: list[Path] = []
    total_n, total_s = 0, 0.0
    for name in sets:
        recs = load_set(cfg, name)
        texts = [r["text"] for r in recs]
        y = np.array([int(r["label"]) for r in recs])
        scorer.reset_stats()
        t0 = time.perf_counter()
        scores = scorer.score(texts)
        seconds = time.perf_counter() - t0
        total_n += len(texts)
        total_s += seconds
        stats = scorer.reset_stats()
        m: dict[str, Any] = {
            "n": len(recs),
            "threshold_tuned": t_tuned,
            "default": binary_metrics(y, scores, t_default),
            "tuned": binary_metrics(y, scores, t_tuned),
            "truncated": stats.truncated,
            "empty": stats.empty,
            "samples_per_s": len(texts) / seconds if seconds > 0 else float("nan"),
        }
        d: dict[str, Any] = {
            "encode_stats": stats.as_dict(),
            "ci95_default": bootstrap_ci(y, scores, t_default, cfg.evaluate.bootstrap_samples, cfg.data.seed),
            "ci95_tuned": bootstrap_ci(y, scores, t_tuned, cfg.evaluate.bootstrap_samples, cfg.data.seed)
            if t_tuned != t_default else "same as ci95_default",
            "slices_default": slice_metrics(recs, scores, t_default, SLICES.get(SET_KIND.get(name, ""), ())),
        }
        if getattr(scorer, "answer_mass", None) is not None:
            d["mean_answer_mass"] = float(np.mean(scorer.answer_mass))
        if generate:
            t0 = time.perf_counter()
            labels, n_unparsed = scorer.generate_labels(texts)
            gen = {"n_unparsed": n_unparsed, "seconds": time.perf_counter() - t0}
            ok = labels >= 0
            # Unparsed answers count as wrong (non-toxic prediction) in the study's reading.
            gen.update(binary_metrics(y, np.where(ok, labels, 0), 0.5))
            m["generate"] = {k: gen[k] for k in ("accuracy", "f1", "n_unparsed")}
            d["generate"] = gen
            scorer.reset_stats()
        _write_predictions(out_dir / "predictions" / f"{name}.csv", recs, scores, t_default, t_tuned)
        if plots:
            pngs.extend(write_plots(name, y, scores, t_tuned, out_dir / "plots", title=title).values())
        metrics[name] = m
        details[name] = d
    metrics["speed"] = throughput(total_n, total_s, scorer.startup_seconds)
    return metrics, details, pngs
