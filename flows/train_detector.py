"""Prefect flow ``train-detector``: the DVC pipeline up to ``evaluate`` as one DVC experiment, its outputs
pushed to the DVC remote, then the detector registered in MLflow with its lineage.

The steps (validate, split, base, stage 1, stage 2, evaluate) are the stages of ``dvc.yaml``; this flow
runs them with ``dvc exp run --temp`` (see ``flows._dvc``) and adds what Prefect is for: deployments on
work pools, retries, logs, artifacts and the UI. DVC alone decides what reruns: a second run with the
same code, params and data restores every stage from DVC's run-cache, and an edited training module
retrains. The flow owns the parent MLflow run; every stage's run nests under it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chintox.tracking import tracking_uri
from flows import _dvc
from flows._common import artifact, load_cfg, metrics_markdown, parent_run, run_link

TARGET = "evaluate"  # the last stage a detector needs; Table 1 is `dvc repro table1`


@task(name="dvc-experiment", retries=1, retry_delay_seconds=30, cache_policy=NO_CACHE)
def experiment_task(root: str, name: str, set_params: dict[str, str], targets: list[str], uri: str,
                    force: bool = False) -> dict[str, Any]:
    """``dvc exp run --temp``; a retry resumes training from the checkpoints (``paths.checkpoints``)."""
    logger = get_run_logger()
    r = Path(root)
    exp = _dvc.run_experiment(r, name, set_params, targets, _dvc.subprocess_env(r, uri), log=logger.info,
                              force=force)
    for stage, what in exp.stages.items():
        logger.info("stage %s: %s", stage, what)
    return {"name": exp.name, "rev": exp.rev, "baseline": exp.baseline, "stages": exp.stages}


@task(name="dvc-push", retries=2, retry_delay_seconds=[10, 30], cache_policy=NO_CACHE)
def push_task(root: str, rev: str, targets: list[str]) -> int:
    return _dvc.push(Path(root), rev, targets)


@task(name="register", retries=2, retry_delay_seconds=[10, 30], cache_policy=NO_CACHE)
def register_task(params: str, profile: str | None, overrides: dict | None, root: str,
                  exp: dict[str, Any]) -> dict:
    """Register the experiment's detector, read back from the DVC cache at the experiment's commit, with
    the metrics of that same commit and the experiment as lineage."""
    from tasks.register import run_register

    cfg = load_cfg(params, profile, overrides)
    detector, metrics = pipeline_outputs(cfg)
    lineage = _lineage(Path(root), exp, [detector, f"{cfg.data.out_dir}/splits"])
    with _dvc.checked_out(Path(root), exp["rev"], [detector, metrics]) as tmp:
        return run_register(cfg, model_dir=tmp / detector, metrics_file=tmp / metrics, lineage=lineage)


def pipeline_outputs(cfg: Any) -> tuple[str, str]:
    """The detector folder and the metrics file, relative to the repository (they are DVC outputs)."""
    return f"{cfg.paths.models}/stage2", f"{cfg.paths.reports}/metrics.json"


def _lineage(root: Path, exp: dict[str, Any], outs: list[str]) -> dict[str, str]:
    tags = _dvc.Experiment(exp["name"], exp["rev"], exp["baseline"]).as_tags()
    tags.update({f"dvc.md5.{p}": h for p, h in _dvc.lock_hashes(root, exp["rev"], outs).items()})
    return tags


def read_metrics(root: Path, rev: str, rel: str) -> dict[str, Any]:
    """The metrics file ``rel`` as committed by the experiment ``rev``."""
    import json

    with _dvc.checked_out(root, rev, [rel]) as tmp:
        return json.loads((tmp / rel).read_text(encoding="utf-8"))


def stages_markdown(title: str, exp: dict[str, Any], pushed: int | None) -> str:
    lines = [f"# {title}", "", (f"- **DVC experiment**: `{exp['name']}` (commit `{exp['rev'][:12]}`, "
             f"based on `{exp['baseline'][:12]}`)"),
             f"- **restore**: `dvc exp apply {exp['name']}` then `dvc checkout` (or `dvc pull`)",
             f"- **pushed to the DVC remote**: {'not pushed' if pushed is None else f'{pushed} files'}", "",
             "| stage | what DVC did |", "|---|---|"]
    lines += [f"| {s} | {w} |" for s, w in exp["stages"].items()]
    return "\n".join(lines) + "\n"


@flow(name="train-detector", log_prints=True)
def train_detector(
    profile: str | None = None,
    params: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    backend: str | None = None,
    register_model: bool = True,
    push_outputs: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Run the DVC pipeline up to ``evaluate`` as a DVC experiment with ``profile`` and ``overrides``
    (dotted keys, as ``chintox --set``), push its outputs, register the detector. ``force`` reruns every
    stage even when DVC has it cached."""
    logger = get_run_logger()
    root = _dvc.repo_root(Path(params).resolve().parent)
    overrides = {**(overrides or {}), **({"evaluate.backend": backend} if backend else {})}
    cfg = load_cfg(params, profile, overrides)
    name = _dvc.experiment_name("train-detector")
    with parent_run(cfg, "train-detector", tags={"dvc.exp_name": name}) as parent:
        logger.info("MLflow parent run %s (%s); DVC experiment %s", parent["run_id"], tracking_uri(cfg), name)
        exp = experiment_task(str(root), name, _dvc.set_params(root, profile, overrides), [TARGET],
                              tracking_uri(cfg), force)
        pushed = push_task(str(root), exp["rev"], [TARGET]) if push_outputs else None
        artifact("train-detector-stages", stages_markdown(f"DVC experiment {name}", exp, pushed),
                 "What DVC ran, restored or skipped, and how to restore the run")
        metrics = read_metrics(root, exp["rev"], pipeline_outputs(cfg)[1])
        link = run_link(cfg, parent["run_id"], parent["experiment_id"])
        artifact("train-detector-metrics",
                 metrics_markdown(f"Detector metrics ({cfg.profile})", metrics, link,
                                  {"DVC experiment": name, "detector": pipeline_outputs(cfg)[0]}),
                 "Evaluation metrics of the trained detector, with a link to the MLflow run")
        registered = register_task(params, profile, overrides, str(root), exp) if register_model else None
        if registered:
            artifact("train-detector-registration",
                     metrics_markdown(f"Registered {registered['registered_model']} v{registered['version']}",
                                      metrics, link, {"model_uri": registered["model_uri"],
                                                      "DVC experiment": name,
                                                      "aliases": ", ".join(registered["aliases"])}),
                     "The registered model version")
    return {"experiment": exp, "pushed": pushed, "metrics": metrics, "registered": registered,
            "mlflow_parent_run_id": parent["run_id"]}


if __name__ == "__main__":  # pragma: no cover
    train_detector()
