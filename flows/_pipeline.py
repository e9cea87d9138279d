"""The body every pipeline flow shares: one DVC experiment up to a target stage, its outputs pushed to the
DVC remote, the metrics and what DVC did as Prefect artifacts, and (on request) the detector registered
in MLflow with the experiment as lineage. The flows (``train-detector``, ``evaluate-detector``) differ
only in their target and defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chintox.preflight import check_pipeline
from chintox.tracking import tracking_uri
from flows import _dvc
from flows._common import artifact, load_cfg, metrics_markdown, parent_run, run_link


@task(name="dvc-experiment", retries=1, retry_delay_seconds=30, cache_policy=NO_CACHE)
def experiment_task(root: str, name: str, set_params: dict[str, str], targets: list[str], uri: str,
                    force: bool = False, pull: bool = False) -> dict[str, Any]:
    """``dvc exp run --temp``; a retry resumes training from the checkpoints (``paths.checkpoints``)."""
    logger = get_run_logger()
    r = Path(root)
    exp = _dvc.run_experiment(r, name, set_params, targets, _dvc.subprocess_env(r, uri), log=logger.info,
                              force=force, pull=pull)
    for stage, what in exp.stages.items():
        logger.info("stage %s: %s", stage, what)
    return {"name": exp.name, "rev": exp.rev, "baseline": exp.baseline, "stages": exp.stages}


@task(name="dvc-push", retries=2, retry_delay_seconds=[10, 30], cache_policy=NO_CACHE)
def push_task(root: str, rev: str, targets: list[str]) -> int:
    return _dvc.push(Path(root), rev, targets)


@task(name="dvc-exp-push", retries=2, retry_delay_seconds=[10, 30], cache_policy=NO_CACHE)
def push_experiment_task(root: str, name: str) -> None:
    _dvc.push_experiment(Path(root), name)


@task(name="register", retries=2, retry_delay_seconds=[10, 30], cache_policy=NO_CACHE)
def register_task(params: str, profile: str | None, overrides: dict | None, root: str,
                  exp: dict[str, Any]) -> dict:
    """Register the experiment's detector, read back from the DVC cache at the experiment's commit, with
    the metrics of that same commit and the experiment as lineage."""
    from tasks.register import run_register

    cfg = load_cfg(params, profile, overrides)
    detector, metrics = pipeline_outputs(cfg)
    outs = [detector, f"{cfg.data.out_dir}/splits"]
    files = [detector, metrics]
    if cfg.feedback.train:  # the feedback sets it trained on and the holdout the gate scores, same commit
        from chintox.feedback import HOLDOUT_FILE, SETS_DIR, SOURCE_FILE, sets_path

        outs += [f"{cfg.data.out_dir}/{SETS_DIR}", cfg.feedback.store]
        holdout, source = (sets_path(cfg.data.out_dir, n).as_posix() for n in (HOLDOUT_FILE, SOURCE_FILE))
        files += [holdout, source]
    lineage = _lineage(Path(root), exp, outs)
    with _dvc.checked_out(Path(root), exp["rev"], files) as tmp:
        kw: dict[str, Any] = {}
        if cfg.feedback.train:
            from chintox.registry import FEEDBACK_CORRECTIONS_TAG

            lineage[FEEDBACK_CORRECTIONS_TAG] = str(json.loads((tmp / source).read_text(encoding="utf-8"))["corrections"])
            kw["feedback_holdout"] = tmp / holdout
        return run_register(cfg, model_dir=tmp / detector, metrics_file=tmp / metrics, lineage=lineage, **kw)


def pipeline_outputs(cfg: Any) -> tuple[str, str]:
    """The detector folder and the metrics file, relative to the repository (they are DVC outputs)."""
    return f"{cfg.paths.models}/stage2", f"{cfg.paths.reports}/metrics.json"


def _lineage(root: Path, exp: dict[str, Any], outs: list[str]) -> dict[str, str]:
    """Tags that restore the run with DVC: the commit it was based on, the experiment, and the md5 that
    ``dvc checkout`` restores for each of ``outs``."""
    tags = {"git_commit": exp["baseline"], "dvc.exp_name": exp["name"], "dvc.exp_rev": exp["rev"]}
    tags.update({f"dvc.md5.{p}": h for p, h in _dvc.lock_hashes(root, exp["rev"], outs).items()})
    return tags


def read_metrics(root: Path, rev: str, rel: str) -> dict[str, Any]:
    """The metrics file ``rel`` as committed by the experiment ``rev``."""
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


def run_pipeline(flow: str, target: str, profile: str | None, params: str,
                 overrides: dict[str, Any] | None, backend: str | None, register_model: bool,
                 push_outputs: bool, force: bool = False, push_experiment: bool = False,
                 pull_outputs: bool = False) -> dict[str, Any]:
    """``dvc exp run --temp ... <target>`` with ``profile`` and ``overrides`` (dotted keys, as
    ``chintox --set``; ``backend`` is ``evaluate.backend``), under the flow's parent MLflow run.
    The */remote deployments set ``pull_outputs`` (``dvc exp run --pull``: stages another machine ran are
    restored from the DVC remote) and ``push_experiment`` (``dvc exp push origin``: a worker's clone is
    temporary; the git remote keeps the experiment's commit, the lineage)."""
    logger = get_run_logger()
    root = _dvc.repo_root(Path(params).resolve().parent)
    overrides = {**(overrides or {}), **({"evaluate.backend": backend} if backend else {})}
    cfg = load_cfg(params, profile, overrides)
    check_pipeline(cfg)  # before any stage runs: CUDA where asked, the base model reachable
    name = _dvc.experiment_name(flow)
    detector, metrics_file = pipeline_outputs(cfg)
    with parent_run(cfg, flow, tags={"dvc.exp_name": name}) as parent:
        logger.info("MLflow parent run %s (%s); DVC experiment %s", parent["run_id"], tracking_uri(cfg), name)
        exp = experiment_task(str(root), name, _dvc.set_params(root, profile, overrides), [target],
                              tracking_uri(cfg), force, pull_outputs)
        pushed = push_task(str(root), exp["rev"], [target]) if push_outputs else None
        if push_experiment:
            push_experiment_task(str(root), exp["name"])
        artifact(f"{flow}-stages", stages_markdown(f"DVC experiment {name}", exp, pushed),
                 "What DVC ran, restored or skipped, and how to restore the run")
        metrics = read_metrics(root, exp["rev"], metrics_file)
        link = run_link(cfg, parent["run_id"], parent["experiment_id"])
        artifact(f"{flow}-metrics",
                 metrics_markdown(f"Detector metrics ({cfg.profile})", metrics, link,
                                  {"DVC experiment": name, "detector": detector}),
                 "Evaluation metrics of the detector, with a link to the MLflow run")
        registered = register_task(params, profile, overrides, str(root), exp) if register_model else None
        if registered:
            artifact(f"{flow}-registration",
                     metrics_markdown(f"Registered {registered['registered_model']} v{registered['version']}",
                                      metrics, link, {"model_uri": registered["model_uri"],
                                                      "DVC experiment": name,
                                                      "aliases": ", ".join(registered["aliases"])}),
                     "The registered model version")
    return {"experiment": exp, "pushed": pushed, "metrics": metrics, "registered": registered,
            "mlflow_parent_run_id": parent["run_id"]}
