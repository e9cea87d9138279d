"""Evaluate step: score every set in ``evaluate.sets`` with one backend (``hf`` | ``vllm``) and write

- ``<reports>/metrics.json`` (DVC metrics; stable keys ``<set>.default.*`` at threshold
  ``evaluate.threshold`` and ``<set>.tuned.*`` at the detector's ToxiCN-val threshold, counts of
  truncated / empty texts, ``speed.*``: samples/s excluding start-up and start-up seconds), which also
  says what was scored: ``detector_sha256`` (the folder's content hash) and ``eval_data_sha256`` (each
  scored split file's sha256), so the register step can refuse metrics of another detector;
- ``<reports>/eval_details.json`` (bootstrap 95% intervals, slices, encode stats);
- ``<reports>/predictions/<set>.csv`` (id, label, score, pred, pred_tuned);
- ``<reports>/plots/<set>/{roc,pr,confusion,hist}.png`` and ``roc.csv``, ``pr.csv``, ``hist.csv``;
and logs all of it to MLflow (run ``evaluate``). The scoring engine is :mod:`chintox.evaluation`;
Table 1 is :mod:`tasks.table1`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chintox.card import DetectorCard
from chintox.evaluation import evaluate_scorer, load_set, set_sha256
from chintox.metrics import flatten_metrics, rounded, tune_threshold
from chintox.provenance import dir_sha256


def _tuned_threshold(cfg: Any, card: DetectorCard | None, scorer: Any) -> tuple[float, str]:
    """The detector's own threshold (its card's), else one tuned on ``evaluate.val_set``."""
    if card is not None:
        return card.threshold, "detector.json"
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
    card = DetectorCard.find(model_dir)
    scored = {"detector_sha256": dir_sha256(model_dir),  # what these metrics are of (checked at registration)
              "eval_data_sha256": {name: set_sha256(cfg, name) for name in sets}}
    scorer = make_scorer(model_dir, cfg, backend)
    try:
        t_tuned, t_source = _tuned_threshold(cfg, card, scorer)
        if card is None and t_source.startswith("tuned on"):
            scored["eval_data_sha256"][cfg.evaluate.val_set] = set_sha256(cfg, cfg.evaluate.val_set)
        t_default = card.threshold_default if card else float(cfg.evaluate.threshold)
        metrics, details, pngs = evaluate_scorer(cfg, scorer, sets, out_dir, t_default, t_tuned,
                                                 generate=generate, title=f"{model_dir.name} [{backend}]")
    finally:
        scorer.close()
    metrics = rounded(metrics)
    metrics["backend"] = backend
    metrics["model"] = str(model_dir)
    metrics["threshold_default"] = t_default
    metrics["threshold_source"] = t_source
    metrics.update(scored)
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
            mlflow.log_metrics(flatten_metrics({k: v for k, v in metrics.items() if isinstance(v, dict)}))
            mlflow.log_artifact(str(out_dir / "metrics.json"))
            mlflow.log_artifact(str(out_dir / "eval_details.json"))
            for p in pngs:
                mlflow.log_artifact(str(p), artifact_path=f"plots/{p.parent.name}")
    return metrics
