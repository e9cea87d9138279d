"""Prefect flow ``train-detector``: validate -> split -> base -> stage 1 -> stage 2 -> evaluate -> register.

Each task is a thin wrapper over the ``tasks.*`` function that the DVC stage (through the CLI) also
runs. Training and evaluation are cached on a token that hashes the params, the raw data and the
upstream steps (see ``flows._common.cache_tokens``), so re-running after a failed registration reuses
the trained detector; I/O tasks retry. The flow owns the parent MLflow run; stage runs nest under it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from flows._common import artifact, cache_tokens, load_cfg, metrics_markdown, parent_run, run_link

STEPS = ["validate", "split", "base", "stage1", "stage2", "evaluate"]
CACHED = INPUTS + TASK_SOURCE
CfgArgs = tuple[str, str | None, dict[str, Any] | None]


@task(name="validate", retries=2, retry_delay_seconds=[5, 20], cache_policy=CACHED)
def validate_task(params: str, profile: str | None, overrides: dict | None, token: str) -> Any:
    from tasks.validate import run_validate

    return run_validate(load_cfg(params, profile, overrides))


@task(name="split", retries=1, retry_delay_seconds=5, cache_policy=CACHED)
def split_task(params: str, profile: str | None, overrides: dict | None, token: str) -> Any:
    from tasks.split import run_split

    return run_split(load_cfg(params, profile, overrides))


@task(name="base", cache_policy=CACHED)
def base_task(params: str, profile: str | None, overrides: dict | None, token: str) -> str:
    from tasks.base_model import run_base

    return str(run_base(load_cfg(params, profile, overrides)))


@task(name="stage1", cache_policy=CACHED)
def stage1_task(params: str, profile: str | None, overrides: dict | None, token: str) -> str:
    from tasks.train import run_stage1

    return str(run_stage1(load_cfg(params, profile, overrides)))


@task(name="stage2", cache_policy=CACHED)
def stage2_task(params: str, profile: str | None, overrides: dict | None, token: str) -> str:
    from tasks.train import run_stage2

    return str(run_stage2(load_cfg(params, profile, overrides)))


@task(name="evaluate", cache_policy=CACHED)
def evaluate_task(params: str, profile: str | None, overrides: dict | None, token: str,
                  model_dir: str | None = None, backend: str | None = None) -> dict:
    from tasks.evaluate import run_evaluate

    return run_evaluate(load_cfg(params, profile, overrides), model_dir=model_dir, backend=backend)


@task(name="register", retries=2, retry_delay_seconds=[10, 30], cache_policy=None)
def register_task(params: str, profile: str | None, overrides: dict | None,
                  model_dir: str | None = None) -> dict:
    from tasks.register import run_register

    return run_register(load_cfg(params, profile, overrides), model_dir=model_dir)


def _require(path: str, step: str) -> None:
    if not Path(path).exists():
        raise FileNotFoundError(
            f"{step} returned {path} (possibly from the Prefect cache) but it is not on disk; re-run with "
            "refresh_cache=true")


@flow(name="train-detector", log_prints=True)
def train_detector(
    profile: str | None = None,
    params: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    backend: str | None = None,
    register_model: bool = True,
    refresh_cache: bool = False,
) -> dict[str, Any]:
    """Train, evaluate and register one detector; returns the registration summary and the metrics."""
    logger = get_run_logger()
    cfg = load_cfg(params, profile, overrides)
    tok = cache_tokens(cfg, STEPS)
    a = (params, cfg.profile, overrides)
    opts = {"refresh_cache": True} if refresh_cache else {}
    with parent_run(cfg, "train-detector") as parent:
        logger.info("MLflow parent run %s (%s)", parent["run_id"], cfg.mlflow.tracking_uri)
        validate_task.with_options(**opts)(*a, token=tok["validate"])
        split_task.with_options(**opts)(*a, token=tok["split"])
        base_task.with_options(**opts)(*a, token=tok["base"])
        stage1_task.with_options(**opts)(*a, token=tok["stage1"])
        detector = stage2_task.with_options(**opts)(*a, token=tok["stage2"])
        _require(detector, "stage2")
        metrics = evaluate_task.with_options(**opts)(*a, token=tok["evaluate"], model_dir=detector,
                                                     backend=backend)
        link = run_link(cfg, parent["run_id"], parent["experiment_id"])
        artifact("train-detector-metrics",
                 metrics_markdown(f"Detector metrics ({cfg.profile})", metrics, link,
                                  {"detector": detector}),
                 "Evaluation metrics of the trained detector, with a link to the MLflow run")
        registered = register_task(*a, model_dir=detector) if register_model else None
        if registered:
            artifact("train-detector-registration",
                     metrics_markdown(f"Registered {registered['registered_model']} v{registered['version']}",
                                      metrics, link, {"model_uri": registered["model_uri"],
                                                      "aliases": ", ".join(registered["aliases"])}),
                     "The registered model version")
    return {"detector": detector, "metrics": metrics, "registered": registered,
            "mlflow_parent_run_id": parent["run_id"]}


if __name__ == "__main__":  # pragma: no cover
    train_detector()
