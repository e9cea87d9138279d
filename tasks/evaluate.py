"""Evaluate step and the study's Table 1.

``run_evaluate`` scores every set in ``evaluate.sets`` with one backend (``hf`` | ``vllm``) and writes:

- ``<reports>/metrics.json`` (DVC metrics; stable keys ``<set>.default.*`` at threshold
  ``evaluate.threshold`` and ``<set>.tuned.*`` at the detector's ToxiCN-val threshold, counts of
  truncated / empty texts, ``speed.*``: samples/s excluding start-up and start-up seconds);
- ``<reports>/eval_details.json`` (bootstrap 95% intervals, slices, encode stats);
- ``<reports>/predictions/<set>.csv`` (id, label, score, pred, pred_tuned);
- ``<reports>/plots/<set>/{roc,pr,confusion,hist}.png`` and ``roc.csv``, ``pr.csv``, ``hist.csv``;
and logs all of it to MLflow (run ``evaluate``).

``run_table1`` evaluates the zero-shot base, the stage-2-only and the stage-1+2 detectors with each
backend, plus a TF-IDF reference, and writes ``<reports>/table1.md`` (study layout).
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from chintox.metrics import (
    SLICES,
    binary_metrics,
    bootstrap_ci,
    rounded,
    slice_metrics,
    throughput,
    tune_threshold,
)

SET_KIND = {"toxicn_test": "toxicn", "toxicn_val": "toxicn", "toxicn_train": "toxicn", "cold_test": "cold"}


def load_set(cfg: Any, name: str) -> list[dict]:
    from chintox.splits import load_split

    return load_split(cfg.data.out_dir, name)


def _detector_info(model_dir: Path) -> dict[str, Any]:
    f = model_dir / "detector.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}


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


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and not math.isnan(v):
            out[key] = float(v)
    return out


def _tuned_threshold(cfg: Any, model_dir: Path, info: dict[str, Any], scorer: Any) -> tuple[float, str]:
    if info.get("threshold") is not None:
        return float(info["threshold"]), "detector.json"
    try:
        recs = load_set(cfg, cfg.evaluate.val_set)
    except (FileNotFoundError, ValueError):
        return float(cfg.evaluate.threshold), "default (no validation split)"
    scores = scorer.score([r["text"] for r in recs])
    scorer.reset_stats()
    return tune_threshold([int(r["label"]) for r in recs], scores, "f1"), f"tuned on {cfg.evaluate.val_set}"


def run_evaluate(cfg: Any, model_dir: str | Path | None = None, backend: str | None = None, *,
                 sets: list[str] | None = None, reports_dir: str | Path | None = None,
                 log_mlflow: bool = True, generate: bool | None = None) -> dict[str, Any]:
    """The `evaluate` pipeline step; returns the metrics dict written to metrics.json."""
    from chintox.scoring import make_scorer

    model_dir = Path(model_dir) if model_dir else Path(cfg.paths.models) / "stage2"
    backend = backend or cfg.evaluate.backend
    sets = list(sets or cfg.evaluate.sets)
    out_dir = Path(reports_dir) if reports_dir else Path(cfg.paths.reports)
    out_dir.mkdir(parents=True, exist_ok=True)
    generate = cfg.evaluate.generate_and_parse if generate is None else generate
    info = _detector_info(model_dir)
    scorer = make_scorer(model_dir, cfg, backend)
    try:
        t_tuned, t_source = _tuned_threshold(cfg, model_dir, info, scorer)
        t_default = float(info.get("threshold_default", cfg.evaluate.threshold))
        metrics, details, pngs = evaluate_scorer(cfg, scorer, sets, out_dir, t_default, t_tuned,
                                                 generate=generate, title=f"{model_dir.name} [{backend}]")
    finally:
        scorer.close()
    metrics = rounded(metrics)
    metrics["backend"] = backend
    metrics["model"] = str(model_dir)
    metrics["threshold_default"] = t_default
    metrics["threshold_source"] = t_source
    details = rounded(details)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "eval_details.json").write_text(json.dumps(details, indent=2, ensure_ascii=False) + "\n")
    if log_mlflow:
        import mlflow

        from chintox.tracking import stage_run

        with stage_run(cfg, "evaluate", tags={"backend": backend}):
            mlflow.log_params({"model_dir": str(model_dir), "backend": backend, "sets": ",".join(sets),
                               "threshold_default": t_default, "threshold_tuned": t_tuned,
                               "threshold_source": t_source, "max_model_len": cfg.evaluate.max_model_len})
            mlflow.log_metrics(_flat({k: v for k, v in metrics.items() if isinstance(v, dict)}))
            mlflow.log_artifact(str(out_dir / "metrics.json"))
            mlflow.log_artifact(str(out_dir / "eval_details.json"))
            for p in pngs:
                mlflow.log_artifact(str(p), artifact_path=f"plots/{p.parent.name}")
    return metrics


# ---------------------------------------------------------------------------------------- Table 1

PAPER_NOTE = (
    "**Published figures (the study's, not ours; Qwen1.5-1.8B-Chat, one A800 GPU):** best detector "
    "81.46% accuracy / 82.82 F1 on ToxiCN test, 72.70% accuracy on COLD test; vLLM 209.79 samples/s "
    "vs 33.2 samples/s without vLLM."
)


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.2f}"


def _row_mismatch(label: str, d: Path) -> str | None:
    """A detector folder whose own record contradicts the Table 1 row it was put in (a stage-2-only
    detector in the stage-1+2 row, say) is reported, never scored under the wrong name."""
    meta = d / "detector.json"
    if not meta.is_file():
        return None  # a plain model folder (the zero-shot base)
    stage1 = json.loads(meta.read_text(encoding="utf-8")).get("stage1_enabled")
    if "Stage 1+2" in label and stage1 is False:
        return f"not available: {d} was trained without stage 1 (detector.json stage1_enabled=false)"
    if "Stage 2 only" in label and stage1 is True:
        return f"not available: {d} was trained with stage 1 (detector.json stage1_enabled=true)"
    return None


ROW_BASE, ROW_S2, ROW_S12 = "Base, zero-shot", "Stage 2 only (ToxiCN)", "Stage 1+2 (COIG-CQIA & ToxiCN)"


def _default_rows(models: Path, ev: Any) -> dict[str, Path | None]:
    """Table 1's model rows. The configured detector folders (``evaluate.table1_detectors``: the
    pipeline's ``stage2`` and the ``table1_arm`` step's detector, trained with stage 1 flipped) are
    placed by what each one records (``stage1_enabled`` in detector.json), never by folder name."""
    rows: dict[str, Path | None] = {ROW_BASE: models / ev.base_dir, ROW_S2: None, ROW_S12: None}
    placed: dict[str, Path] = {}
    for name in ev.table1_detectors:
        meta = models / name / "detector.json"
        if meta.is_file():
            row = ROW_S12 if json.loads(meta.read_text(encoding="utf-8")).get("stage1_enabled") else ROW_S2
            placed.setdefault(row, models / name)
    rows.update(placed)
    return rows


def table1_rows(cfg: Any, model_dirs: dict[str, Path | None] | None = None,
                backends: list[str] | None = None) -> list[dict[str, Any]]:
    models = Path(cfg.paths.models)
    ev = cfg.evaluate
    model_dirs = model_dirs or _default_rows(models, ev)
    backends = backends or list(ev.table1_backends)
    sets = ["toxicn_test", "cold_test"]
    rows: list[dict[str, Any]] = []
    for label, d in model_dirs.items():
        for be in backends:
            row: dict[str, Any] = {"model": label, "backend": be, "dir": str(d) if d else None}
            if d is None:
                where = ", ".join(str(models / n) for n in ev.table1_detectors)
                row["note"] = (f"not available: no detector for this row among {where} "
                               "(run `dvc repro table1_arm`, or `chintox table1-arm`)")
                rows.append(row)
                continue
            if not Path(d).exists():
                row["note"] = f"not available: {d} is missing"
                rows.append(row)
                continue
            mismatch = _row_mismatch(label, Path(d))
            if mismatch:
                row["note"] = mismatch
                rows.append(row)
                continue
            try:
                from chintox.scoring import make_scorer

                scorer = make_scorer(d, cfg, be)
                try:
                    m, _, _ = evaluate_scorer(cfg, scorer, sets, Path(cfg.paths.reports) / "table1" /
                                              f"{Path(d).name}_{be}", ev.threshold, ev.threshold, plots=False)
                finally:
                    scorer.close()
                row.update(toxicn=m["toxicn_test"]["default"], cold=m["cold_test"]["default"],
                           speed=m["speed"],
                           truncated=m["toxicn_test"]["truncated"] + m["cold_test"]["truncated"])
            except Exception as e:  # noqa: BLE001 - a failed row is reported, not fatal
                row["note"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
    return rows


def render_table1(rows: list[dict[str, Any]], cfg: Any) -> str:
    lines = [
        "# Table 1: toxic-content detection on ToxiCN test and COLD test",
        "",
        (f"Profile `{cfg.profile}`, model `{cfg.model.base}`; threshold {cfg.evaluate.threshold} "
         "(score = p(是) / (p(是) + p(否)) at the first answer position). AUC from scores; "
         "\"AUC (labels)\" is the study's AUC from hard labels. samples/s: ToxiCN test + COLD test, "
         "start-up excluded (start-up in its own column; for TF-IDF it is the training time)."),
        "",
        "| Model | Backend | Acc | P | R | F1 | AUC | AUC (labels) | COLD Acc | samples/s | start-up s | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, c, s = r.get("toxicn"), r.get("cold"), r.get("speed")
        if t is None:
            lines.append(f"| {r['model']} | {r['backend']} | | | | | | | | | | {r.get('note', '')} |")
            continue
        note = f"{r['truncated']} texts truncated" if r.get("truncated") else ""
        lines.append(
            f"| {r['model']} | {r['backend']} | {_pct(t['accuracy'])} | {_pct(t['precision'])} | "
            f"{_pct(t['recall'])} | {_pct(t['f1'])} | {_pct(t['auc'])} | {_pct(t['auc_hard'])} | "
            f"{_pct(c['accuracy'])} | {s['samples_per_s']:.1f} | {s['startup_seconds']:.1f} | {note} |")
    lines += ["", "Figures in % except speed; ToxiCN test for Acc..AUC (labels).", "", PAPER_NOTE, ""]
    return "\n".join(lines)


def run_table1(cfg: Any, model_dirs: dict[str, Path] | None = None, backends: list[str] | None = None,
               log_mlflow: bool = True) -> Path:
    """Write ``<reports>/table1.md`` (and table1.json) and log them to MLflow; returns the .md path."""
    from tasks.baseline import run_tfidf_reference

    rows = table1_rows(cfg, model_dirs, backends)
    try:
        ref = run_tfidf_reference(cfg, ["toxicn_test", "cold_test"])
        rows.append({"model": "Char n-gram TF-IDF + logistic regression (reference)", "backend": "sklearn",
                     "toxicn": ref["toxicn_test"], "cold": ref["cold_test"], "speed": ref["speed"],
                     "truncated": 0})
    except Exception as e:  # noqa: BLE001
        rows.append({"model": "Char n-gram TF-IDF (reference)", "backend": "sklearn",
                     "note": f"failed: {type(e).__name__}: {e}"})
    out = Path(cfg.paths.reports)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "table1.md"
    md.write_text(render_table1(rows, cfg), encoding="utf-8")
    (out / "table1.json").write_text(json.dumps(rounded(rows), indent=2, ensure_ascii=False) + "\n")
    if log_mlflow:
        import mlflow

        from chintox.tracking import stage_run

        with stage_run(cfg, "table1"):
            for r in rows:
                if "toxicn" not in r:
                    continue
                key = re.sub(r"[^A-Za-z0-9]+", "_", r["model"].split(" (")[0]).strip("_").lower()
                key = f"{key}.{r['backend']}"
                mlflow.log_metrics({f"{key}.toxicn_f1": r["toxicn"]["f1"],
                                    f"{key}.toxicn_acc": r["toxicn"]["accuracy"],
                                    f"{key}.cold_acc": r["cold"]["accuracy"],
                                    f"{key}.samples_per_s": r["speed"]["samples_per_s"]})
            mlflow.log_artifact(str(md))
            mlflow.log_artifact(str(out / "table1.json"))
    return md
