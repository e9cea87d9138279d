"""Prefect flow ``promote-detector``: gated promotion of the challenger (or a version), or a rollback."""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, task

from flows._common import artifact, load_cfg


@task(name="promote", retries=2, retry_delay_seconds=[5, 20])
def promote_task(params: str, profile: str | None, overrides: dict | None, version: str | None,
                 force: bool, reason: str | None) -> dict:
    from tasks.promote import run_promote

    return run_promote(load_cfg(params, profile, overrides), version=version, force=force, reason=reason)


@task(name="rollback", retries=2, retry_delay_seconds=[5, 20])
def rollback_task(params: str, profile: str | None, overrides: dict | None) -> dict:
    from tasks.promote import run_rollback

    return run_rollback(load_cfg(params, profile, overrides))


class PromotionRejected(RuntimeError):
    """The gate rejected the candidate (the decision is recorded on the version)."""


@flow(name="promote-detector", log_prints=True)
def promote_detector(
    profile: str | None = None,
    params: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    version: str | None = None,
    force: bool = False,
    reason: str | None = None,
    rollback: bool = False,
    fail_on_reject: bool = True,
) -> dict[str, Any]:
    """Promote ``version`` (default @challenger) to @champion through the gate, or roll back."""
    logger = get_run_logger()
    cfg = load_cfg(params, profile, overrides)
    a = (params, cfg.profile, overrides)
    result = rollback_task(*a) if rollback else promote_task(*a, version, force, reason)
    gate = result.get("gate") or {}
    md = [f"# {cfg.mlflow.registered_model}: {result['decision']}", ""]
    md += [f"- **{k}**: {result.get(k)}" for k in ("version", "champion", "previous_champion",
                                                   "rolled_back_version", "reason", "at") if result.get(k)]
    if gate:
        md += ["", "## Gate", ""] + [f"- {r}" for r in gate.get("reasons", [])]
        md += ["", "```json", json.dumps(gate.get("comparison", {}), indent=2), "```"]
    artifact("promote-detector-decision", "\n".join(md) + "\n", "Promotion decision")
    logger.info("decision: %s", result["decision"])
    if result["decision"] == "rejected" and fail_on_reject:
        raise PromotionRejected("gate failed: " + "; ".join(gate.get("reasons", [])))
    return result


if __name__ == "__main__":  # pragma: no cover
    promote_detector()
