"""Prefect flow ``train-detector``: the DVC pipeline up to ``evaluate`` as one DVC experiment, its outputs
pushed to the DVC remote, then the detector registered in MLflow with its lineage.

The steps (validate, split, base, stage 1, stage 2, evaluate) are the stages of ``dvc.yaml``; this flow
runs them with ``dvc exp run --temp`` (see ``flows._dvc`` and ``flows._pipeline``) and adds what Prefect
is for: deployments on work pools, retries, logs, artifacts and the UI. DVC alone decides what reruns: a
second run with the same code, params and data restores every stage from DVC's run-cache, and an edited
training module retrains. The flow owns the parent MLflow run; every stage's run nests under it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._pipeline import run_pipeline

TARGET = "evaluate"  # the last stage a detector needs; Table 1 is `dvc repro table1`


@flow(name="train-detector", log_prints=True)
def train_detector(
    profile: str | None = None,
    params: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    backend: str | None = None,
    register_model: bool = True,
    push_outputs: bool = True,
    push_experiment: bool = False,
    pull_outputs: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Run the DVC pipeline up to ``evaluate`` as a DVC experiment with ``profile`` and ``overrides``
    (dotted keys, as ``chintox --set``), push its outputs, register the detector. ``force`` reruns every
    stage even when DVC has it cached; ``pull_outputs`` and ``push_experiment`` (set by the */remote
    deployments) restore stages from the DVC remote and push the experiment's commit to the git remote."""
    return run_pipeline("train-detector", TARGET, profile, params, overrides, backend, register_model,
                        push_outputs, force, push_experiment, pull_outputs)


if __name__ == "__main__":  # pragma: no cover
    train_detector()
