"""Registry test helpers (imported by name: ``from reg_util import make_version``)."""

from __future__ import annotations

import microdet


def make_version(cfg, metrics=None, sets=("cold_test", "toxicn_test"), eval_data=None, alias="challenger",
                 on_server=False):
    """A registry version with the tags run_register writes, without logging a model (fast). An MLflow
    server refuses a local source: ``on_server`` gives the version an (empty) run of its own instead."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from chintox.metrics import flatten_metrics
    from chintox.tracking import setup

    setup(cfg)
    c = MlflowClient()
    name = cfg.mlflow.registered_model
    try:
        c.create_registered_model(name)
    except MlflowException:
        pass
    flat = flatten_metrics(metrics or microdet.default_metrics())
    tags = {f"metrics.{k}": repr(v) for k, v in flat.items()}
    tags["eval_sets"] = ",".join(sorted(sets))
    tags.update({f"eval_data.{k}": v for k, v in (eval_data or {}).items()})
    if on_server:
        run = c.create_run(setup(cfg))
        mv = c.create_model_version(name, source=f"runs:/{run.info.run_id}/detector", run_id=run.info.run_id,
                                    tags=tags)
    else:
        mv = c.create_model_version(name, source="file:///nonexistent/detector", tags=tags)
    if alias:
        c.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)
