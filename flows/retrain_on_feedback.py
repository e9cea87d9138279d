"""Prefect flow ``retrain-on-feedback``: moderators' corrections -> a retrained, registered, gated detector.

One run of the loop:

1. **import** any correction files it is given (``chintox feedback import``: validated, quarantined with
   reasons, each import a new DVC version of the feedback store);
2. **wait** unless at least ``feedback.min_new_corrections`` corrections arrived since the champion was
   trained (the champion's tag ``feedback.corrections``; 0 for a champion never trained on feedback),
   so a schedule can run this flow often and cheaply;
3. **retrain**: the DVC pipeline up to ``evaluate`` as one DVC experiment with ``feedback.train=true``
   (the stages ``feedback`` and ``stage2`` rerun on the new store version; the rest is DVC's cache), its
   outputs pushed, the detector registered with the feedback store version in its lineage;
4. **gated promotion** of that version: today's rules plus "beats the champion on the feedback
   holdout". The serving stack (``chintox serve``) follows the champion alias by itself.

The deployment ``retrain-on-feedback/local`` runs this on a schedule (prefect.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from chintox.registry import FEEDBACK_CORRECTIONS_TAG
from flows._common import artifact, load_cfg
from flows._pipeline import run_pipeline

FLOW = "retrain-on-feedback"


@task(name="import-feedback", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def import_task(params: str, profile: str | None, overrides: dict | None, file: str) -> dict[str, Any]:
    from tasks.feedback import run_feedback_import

    return run_feedback_import(load_cfg(params, profile, overrides), Path(file))


@task(name="new-corrections", retries=2, retry_delay_seconds=[5, 20], cache_policy=NO_CACHE)
def new_corrections_task(params: str, profile: str | None, overrides: dict | None) -> dict[str, int]:
    """Corrections in the store, and how many of them the champion was trained on."""
    from mlflow import MlflowClient

    from chintox.registry import CHAMPION, version_by_alias, with_retries
    from chintox.tracking import setup
    from tasks.feedback import corrections_count

    cfg = load_cfg(params, profile, overrides)

    def _champion_count() -> int:
        setup(cfg)
        mv = version_by_alias(MlflowClient(), cfg.mlflow.registered_model, CHAMPION)
        return int((mv.tags or {}).get(FEEDBACK_CORRECTIONS_TAG, 0)) if mv is not None else 0

    total = corrections_count(cfg)
    trained = with_retries(_champion_count, cfg, "reading the champion's feedback tag")
    return {"store": total, "champion_trained_on": trained, "new": max(0, total - trained),
            "needed": cfg.feedback.min_new_corrections}


@task(name="promote", retries=2, retry_delay_seconds=[5, 20], cache_policy=NO_CACHE)
def promote_task(params: str, profile: str | None, overrides: dict | None, version: str) -> dict:
    from tasks.promote import run_promote

    return run_promote(load_cfg(params, profile, overrides), version=version)


def _count_md(title: str, counts: dict[str, int], imports: list[dict[str, Any]]) -> str:
    lines = [f"# {title}", "", "| corrections | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in counts.items()]
    if imports:
        lines += ["", "| file | rows | accepted | quarantined | already imported |", "|---|---|---|---|---|"]
        lines += [f"| {i['file']} | {i['rows_read']} | {i['accepted']} | {i['quarantined']} | "
                  f"{i['already_imported']} |" for i in imports]
    return "\n".join(lines) + "\n"


@flow(name=FLOW, log_prints=True)
def retrain_on_feedback(
    profile: str | None = None,
    params: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    files: list[str] | None = None,
    backend: str | None = None,
    min_new: int | None = None,
    push_outputs: bool = True,
) -> dict[str, Any]:
    """Import ``files`` (if any); retrain, register and promote through the gate once at least
    ``min_new`` (default ``feedback.min_new_corrections``) corrections are new since the champion."""
    logger = get_run_logger()
    overrides = dict(overrides or {})
    cfg = load_cfg(params, profile, overrides)
    imports = [import_task(params, profile, overrides, f) for f in (files or [])]
    counts = new_corrections_task(params, profile, overrides)
    needed = cfg.feedback.min_new_corrections if min_new is None else min_new
    counts["needed"] = needed
    if counts["new"] < needed:
        logger.info("%d new corrections since the champion was trained, %d needed: nothing to do",
                    counts["new"], needed)
        artifact(f"{FLOW}-waiting", _count_md("Waiting for corrections", counts, imports),
                 "Not enough new corrections to retrain")
        return {"decision": "waiting", "counts": counts, "imports": imports}

    logger.info("%d new corrections (>= %d): retraining with feedback.train=true", counts["new"], needed)
    run = run_pipeline(FLOW, "evaluate", profile, params, {**overrides, "feedback.train": True}, backend,
                       register_model=True, push_outputs=push_outputs)
    registered = run["registered"]
    result = promote_task(params, profile, overrides, registered["version"])
    gate = result.get("gate") or {}
    md = [_count_md(f"Retrained on feedback: v{registered['version']} {result['decision']}", counts, imports),
          "## Gate", ""] + [f"- {r}" for r in gate.get("reasons", [])]
    md += ["", "```json", json.dumps(gate.get("comparison", {}), indent=2), "```"]
    artifact(f"{FLOW}-decision", "\n".join(md) + "\n", "The retrained version and the gate's decision")
    logger.info("v%s: %s", registered["version"], result["decision"])
    return {"decision": result["decision"], "version": registered["version"], "counts": counts,
            "imports": imports, "promotion": result, "experiment": run["experiment"]}


if __name__ == "__main__":  # pragma: no cover
    retrain_on_feedback()
