"""Prefect flow ``evaluate-detector``: the DVC ``evaluate`` stage as a DVC experiment (e.g. with another
backend or other evaluation settings), optionally followed by registration.

Like ``train-detector`` it runs ``dvc exp run --temp`` (``flows._pipeline``): DVC restores the upstream
stages (data, training) from its cache and reruns ``evaluate`` only when its code, params or inputs
changed. To score an arbitrary folder outside the pipeline, use ``chintox evaluate --model-dir``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._pipeline import run_pipeline


@flow(name="evaluate-detector", log_prints=True)
def evaluate_detector(
    profile: str | None = None,
    params: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    backend: str | None = None,
    register_model: bool = False,
    push_outputs: bool = True,
    push_experiment: bool = False,
    pull_outputs: bool = False,
) -> dict[str, Any]:
    """Evaluate the pipeline's detector (``dvc exp run --temp evaluate``); register it if asked."""
    return run_pipeline("evaluate-detector", "evaluate", profile, params, overrides, backend, register_model,
                        push_outputs, push_experiment=push_experiment, pull_outputs=pull_outputs)


if __name__ == "__main__":  # pragma: no cover
    evaluate_detector()
