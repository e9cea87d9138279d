"""MLflow set-up shared by every step: one tracking store, one experiment, nested runs per stage.

The store is the SQLite database and artifact folder under ``mlruns/`` (params ``mlflow.*``); a user
who outgrows one machine points ``MLFLOW_TRACKING_URI`` at an MLflow server instead, which wins over
params. A step run inside a pipeline run is nested under it: the parent's id travels in the
environment variable ``CHINTOX_PARENT_RUN_ID`` (set by the Prefect flow), so DVC stages and Prefect
tasks log the same way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARENT_ENV = "CHINTOX_PARENT_RUN_ID"


def tracking_uri(cfg: Any) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.mlflow.tracking_uri


def setup(cfg: Any) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; returns its id."""
    import mlflow

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is None:
        artifact_root = Path(cfg.mlflow.artifact_root)
        location = None if "://" in uri and not uri.startswith("sqlite") else artifact_root.resolve().as_uri()
        exp_id = mlflow.create_experiment(cfg.mlflow.experiment, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@contextlib.contextmanager
def stage_run(cfg: Any, stage: str, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """A run for one pipeline stage, nested under the pipeline's parent run when there is one."""
    import mlflow

    setup(cfg)
    parent = os.environ.get(PARENT_ENV)
    all_tags = {"stage": stage, "profile": cfg.profile, **(tags or {})}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    with mlflow.start_run(run_name=stage, tags=all_tags) as run:
        yield run
