"""Prefect flow ``evaluate-detector``: evaluate a detector folder and (optionally) register it."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.cache_policies import NO_CACHE

from flows._common import artifact, load_cfg, metrics_markdown, parent_run, run_link
from flows.train_detector import evaluate_task as _cached_evaluate_task
from flows.train_detector import register_task

# The same task as in train-detector, without its input cache: evaluating on demand always scores.
evaluate_task = _cached_evaluate_task.with_options(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)


@flow(name="evaluate-detector", log_prints=True)
def evaluate_detector(
    profile: str | None = None,
    params: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    model_dir: str | None = None,
    backend: str | None = None,
    evaluate: bool = True,
    register_model: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model_dir`` (default models/stage2) on the evaluation sets; register it if asked.
    ``evaluate=false`` registers with the metrics already in reports/metrics.json."""
    logger = get_run_logger()
    cfg = load_cfg(params, profile, overrides)
    a = (params, cfg.profile, overrides)
    with parent_run(cfg, "evaluate-detector") as parent:
        metrics = evaluate_task(*a, token="", model_dir=model_dir, backend=backend) if evaluate else None
        registered = register_task(*a, model_dir=model_dir) if register_model else None
        if metrics is None and registered is not None:
            metrics = registered.get("metrics")
        link = run_link(cfg, parent["run_id"], parent["experiment_id"])
        extra = {"model_uri": registered["model_uri"]} if registered else {}
        artifact("evaluate-detector-metrics",
                 metrics_markdown(f"Detector evaluation ({cfg.profile})", metrics, link, extra),
                 "Evaluation metrics, with a link to the MLflow run")
        logger.info("metrics: %s", metrics)
    return {"metrics": metrics, "registered": registered, "mlflow_parent_run_id": parent["run_id"]}


if __name__ == "__main__":  # pragma: no cover
    evaluate_detector()
