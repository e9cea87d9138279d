"""Shared pieces of the Prefect flows: config from flow parameters, the parent MLflow run and the markdown
artifacts. No step logic and no cache live here: the steps are the DVC stages (see ``flows._dvc``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from chintox.config import Config, load_config
from chintox.tracking import PARENT_ENV, tracking_uri


def load_cfg(params: str = "params.yaml", profile: str | None = None,
             overrides: dict[str, Any] | None = None) -> Config:
    return load_config(params, profile=profile, overrides=dict(overrides or {}))


def ui_url() -> str:
    return os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")


def run_link(cfg: Config, run_id: str | None, experiment_id: str | None) -> str:
    uri = tracking_uri(cfg)
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else ui_url()
    if not run_id:
        return base
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


@contextlib.contextmanager
def parent_run(cfg: Config, name: str, tags: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """The pipeline's parent MLflow run. It is created through the client (not made "active"), and its
    id is exported as ``CHINTOX_PARENT_RUN_ID`` so every stage run (``chintox.tracking.stage_run``, in
    any thread or subprocess) nests under it; the status is FINISHED or FAILED at the end."""
    from mlflow import MlflowClient

    from chintox.provenance import git_commit
    from chintox.registry import with_retries
    from chintox.tracking import setup

    def _create() -> tuple[str, str]:
        exp_id = setup(cfg)
        run = MlflowClient().create_run(
            exp_id, run_name=name,
            tags={"pipeline": name, "profile": cfg.profile, "git_commit": git_commit(),
                  **({"prefect.flow_run_id": _flow_run_id()} if _flow_run_id() else {}), **(tags or {})},
        )
        return exp_id, run.info.run_id

    exp_id, run_id = with_retries(_create, cfg, f"creating the parent MLflow run of {name}")
    before = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = run_id
    status = "FAILED"
    try:
        yield {"run_id": run_id, "experiment_id": exp_id}
        status = "FINISHED"
    finally:
        if before is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = before
        with contextlib.suppress(Exception):
            MlflowClient().set_terminated(run_id, status=status)


def _flow_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:  # noqa: BLE001
        return None


def metrics_markdown(title: str, metrics: dict[str, Any] | None, link: str,
                     extra: dict[str, Any] | None = None) -> str:
    from chintox.metrics import flatten_metrics

    lines = [f"# {title}", "", f"MLflow run: [{link}]({link})", ""]
    for k, v in (extra or {}).items():
        lines.append(f"- **{k}**: {v}")
    if extra:
        lines.append("")
    flat = flatten_metrics(metrics or {})
    if flat:
        rows: dict[str, dict[str, float]] = {}
        for k, v in flat.items():
            head, _, metric = k.rpartition(".")
            rows.setdefault(head or "-", {})[metric] = v
        cols = sorted({m for r in rows.values() for m in r})
        lines.append("| set | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for s in sorted(rows):
            lines.append(f"| {s} | " + " | ".join(
                f"{rows[s][c]:.4f}" if c in rows[s] else "" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def artifact(key: str, markdown: str, description: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=key, description=description)
