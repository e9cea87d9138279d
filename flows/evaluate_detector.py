"""Prefect flow ``evaluate-detector``: the DVC ``evaluate`` stage as a DVC experiment (e.g. with another
backend or other evaluation settings), optionally followed by registration.

Like ``train-detector`` it runs ``dvc exp run --temp``: DVC restores the upstream stages (data, training)
from its cache and reruns ``evaluate`` only when its code, params or inputs changed. To score an arbitrary
folder outside the pipeline, use ``chintox evaluate --model-dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from chintox.tracking import tracking_uri
from flows import _dvc
from flows._common import artifact, load_cfg, metrics_markdown, parent_run, run_link
from flows.train_detector import (
    experiment_task,
    pipeline_outputs,
    push_task,
    read_metrics,
    register_task,
    stages_markdown,
)


@flow(name="evaluate-detector", log_prints=True)
def evaluate_detector(
    profile: str | None = None,
    params: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    backend: str | None = None,
    register_model: bool = False,
    push_outputs: bool = True,
) -> dict[str, Any]:
    """Evaluate the pipeline's detector (``dvc exp run --temp evaluate``); register it if asked."""
    logger = get_run_logger()
    root = _dvc.repo_root(Path(params).resolve().parent)
    overrides = {**(overrides or {}), **({"evaluate.backend": backend} if backend else {})}
    cfg = load_cfg(params, profile, overrides)
    name = _dvc.experiment_name("evaluate-detector")
    with parent_run(cfg, "evaluate-detector", tags={"dvc.exp_name": name}) as parent:
        exp = experiment_task(str(root), name, _dvc.set_params(root, profile, overrides), ["evaluate"],
                              tracking_uri(cfg))
        pushed = push_task(str(root), exp["rev"], ["evaluate"]) if push_outputs else None
        artifact("evaluate-detector-stages", stages_markdown(f"DVC experiment {name}", exp, pushed),
                 "What DVC ran, restored or skipped, and how to restore the run")
        metrics = read_metrics(root, exp["rev"], pipeline_outputs(cfg)[1])
        registered = register_task(params, profile, overrides, str(root), exp) if register_model else None
        link = run_link(cfg, parent["run_id"], parent["experiment_id"])
        extra = {"DVC experiment": name, **({"model_uri": registered["model_uri"]} if registered else {})}
        artifact("evaluate-detector-metrics",
                 metrics_markdown(f"Detector evaluation ({cfg.profile})", metrics, link, extra),
                 "Evaluation metrics, with a link to the MLflow run")
        logger.info("metrics: %s", metrics)
    return {"experiment": exp, "metrics": metrics, "registered": registered,
            "mlflow_parent_run_id": parent["run_id"]}


if __name__ == "__main__":  # pragma: no cover
    evaluate_detector()
