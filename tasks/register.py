"""Register step: log the trained detector as an MLflow pyfunc and register it as a new version.

The version holds the detector folder (model, tokenizer, prompt, card) behind the pyfunc of
:mod:`chintox.pyfunc`, logged as code. Its tags say what it is, from what was actually used:

- ``detector_sha256``: the content hash of the folder registered (:func:`chintox.provenance.dir_sha256`);
- the card's lineage (``data.toxicn_train``, ``data.toxicn_val``, ``model.*``, ``data.stage1``): sha256
  of the data the detector was trained and validated on and of its upstream model;
- ``eval_data.<set>`` and ``metrics.*``: from the evaluation metrics file, which records the hash of
  each set it scored and of the detector folder it scored; metrics of another detector are refused;
- ``git_commit`` / ``git_dirty`` of this checkout, overridden by the orchestrator's ``lineage`` tags
  (git commit, DVC experiment name and revision) when it passes them;
- only for a detector trained on moderators' feedback (its card's lineage has ``data.feedback_holdout``):
  ``feedback.trained=true``, ``feedback.holdout_sha256`` and ``feedback.holdout_rows`` of the feedback
  holdout it was not trained on. That file must be the one the card names (same sha256) and is logged
  on the version's run as ``feedback/holdout.jsonl``: the promotion gate scores both detectors on it.

The new version gets the alias ``challenger``. Registration is an MLflow side effect, not a DVC stage.
An unreachable tracking server is retried (:func:`chintox.registry.with_retries`); nothing on disk is
touched, so re-running registers the same detector without retraining. Registering a detector whose
files and metrics are already registered returns that version instead of adding a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from chintox.card import LINEAGE_FEEDBACK_HOLDOUT, DetectorCard
from chintox.config import Config
from chintox.feedback import HOLDOUT_FILE, SETS_DIR, read_jsonl, sets_path
from chintox.metrics import find_metric_key, flatten_metrics
from chintox.provenance import dir_sha256, file_sha256, git_commit, git_dirty
from chintox.pyfunc import DETECTOR_ARTIFACT, MODEL_CODE, check_detector_dir, signature
from chintox.registry import (
    CHALLENGER,
    FEEDBACK_HOLDOUT_ARTIFACT,
    FEEDBACK_HOLDOUT_ROWS_TAG,
    FEEDBACK_HOLDOUT_SHA_TAG,
    FEEDBACK_TRAINED_TAG,
    METRIC_TAG_PREFIX,
    RegistryUnavailableError,
    is_connection_error,
    tag_key,
    with_retries,
)
from chintox.tracking import PARENT_ENV, setup, stage_run, tracking_uri

# keys run_evaluate writes into metrics.json to say what it scored
EVAL_DETECTOR_KEY = "detector_sha256"
EVAL_DATA_KEY = "eval_data_sha256"


class RegistrationError(RuntimeError):
    """A detector that cannot be registered (missing or mismatched evaluation metrics, bad folder)."""


def load_eval_metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RegistrationError(
            f"no evaluation metrics at {path.resolve()}: run `chintox evaluate` first; the promotion gate "
            "compares versions on these metrics"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _check_metrics_describe(raw: dict[str, Any], path: Path, d: Path, fingerprint: str) -> dict[str, str]:
    """The evaluation-set hashes of ``raw``, after checking it was computed for the detector ``d``."""
    scored = raw.get(EVAL_DETECTOR_KEY)
    if not scored:
        raise RegistrationError(
            f"{path.resolve()} does not say which detector it scored (no {EVAL_DETECTOR_KEY}): it was "
            f"written by an older evaluate step; re-run `chintox evaluate` for {d}")
    if scored != fingerprint:
        raise RegistrationError(
            f"{path.resolve()} holds metrics of another detector ({EVAL_DETECTOR_KEY} {scored[:16]}...), "
            f"not of {d.resolve()} ({fingerprint[:16]}...): re-run `chintox evaluate` on this detector "
            "before registering it")
    return {str(k): str(v) for k, v in (raw.get(EVAL_DATA_KEY) or {}).items()}


def evaluated_sets(cfg: Config, flat: dict[str, float]) -> list[str]:
    return sorted(s for s in cfg.evaluate.sets if any(find_metric_key(flat, s, m) for m in
                                                       ("f1", "accuracy")))


def check_feedback_holdout(cfg: Config, card: DetectorCard, d: Path,
                           feedback_holdout: str | Path | None) -> tuple[Path, dict[str, str]] | None:
    """For a detector trained on feedback: the holdout file (default ``<data.out_dir>/feedback/holdout.jsonl``)
    after checking it is the one its card names, and the version's ``feedback.*`` tags; None otherwise."""
    want = card.lineage.get(LINEAGE_FEEDBACK_HOLDOUT)
    if not want:
        return None
    path = Path(feedback_holdout) if feedback_holdout else sets_path(cfg.data.out_dir, HOLDOUT_FILE)
    fix = (f"restore the feedback sets the detector was trained with (`dvc checkout {cfg.data.out_dir}/{SETS_DIR}` "
           "at the commit that trained it), or pass that holdout file (feedback_holdout=...)")
    if not path.is_file():
        raise RegistrationError(
            f"{d.resolve()} was trained on feedback and held out the feedback rows with sha256 {want}, but "
            f"there is no file at {path.resolve()}: {fix}")
    got = file_sha256(path)
    if got != want:
        raise RegistrationError(
            f"{path.resolve()} (sha256 {got}) is not the feedback holdout {d.resolve()} was trained beside "
            f"(its card's {LINEAGE_FEEDBACK_HOLDOUT}: {want}): {fix}")
    return path, {FEEDBACK_TRAINED_TAG: "true", FEEDBACK_HOLDOUT_SHA_TAG: got,
                  FEEDBACK_HOLDOUT_ROWS_TAG: str(len(read_jsonl(path)))}


def _log_feedback_holdout(path: Path) -> None:
    """Log ``path`` on the active run at :data:`FEEDBACK_HOLDOUT_ARTIFACT`, whatever its own name."""
    import mlflow

    folder, fname = FEEDBACK_HOLDOUT_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(path, Path(tmp) / fname)
        mlflow.log_artifact(str(Path(tmp) / fname), artifact_path=folder)


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "torch", "transformers", "tokenizers", "peft", "safetensors", "pandas", "pyyaml"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def _find_registered(client: Any, name: str, fingerprint: str) -> Any | None:
    try:
        hits = client.search_model_versions(f"name='{name}' and tags.detector_sha256='{fingerprint}'")
    except Exception as e:
        if is_connection_error(e):
            raise
        return None  # registered model does not exist yet, or tag search unsupported
    return max(hits, key=lambda v: int(v.version)) if hits else None


def _metrics_sha(flat: dict[str, float]) -> str:
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def run_register(cfg: Config, model_dir: str | Path | None = None, metrics_file: str | Path | None = None,
                 lineage: dict[str, str] | None = None,
                 feedback_holdout: str | Path | None = None) -> dict[str, Any]:
    """Register the detector in ``model_dir`` (default ``<paths.models>/stage2``) with the evaluation
    metrics in ``metrics_file`` (default ``<paths.reports>/metrics.json``), which must have been
    computed for this very folder; ``lineage``: extra tags from the orchestrator (they win over the
    locally computed ``git_commit``); ``feedback_holdout``: for a detector trained on feedback, its
    holdout file (default ``<data.out_dir>/feedback/holdout.jsonl``; unused otherwise). Returns a summary."""
    import mlflow
    from mlflow import MlflowClient

    d = Path(model_dir) if model_dir else Path(cfg.paths.models) / "stage2"
    card = check_detector_dir(d)
    mpath = Path(metrics_file) if metrics_file else Path(cfg.paths.reports) / "metrics.json"
    raw_metrics = load_eval_metrics(mpath)
    fingerprint = dir_sha256(d)
    eval_data = _check_metrics_describe(raw_metrics, mpath, d, fingerprint)
    flat = flatten_metrics(raw_metrics)
    sets = evaluated_sets(cfg, flat)
    if not sets:
        raise RegistrationError(f"{mpath} has no metrics for the evaluation sets {cfg.evaluate.sets}")
    holdout = check_feedback_holdout(cfg, card, d, feedback_holdout)
    name = cfg.mlflow.registered_model
    repo_dir = Path(cfg.source).parent if cfg.source and cfg.source != "<dict>" else None
    tags: dict[str, str] = {
        "git_commit": git_commit(repo_dir),
        "git_dirty": git_dirty(repo_dir),
        "profile": cfg.profile,
        "detector_sha256": fingerprint,
        "base_model": card.base_model,
        "stage1_enabled": str(card.stage1_enabled).lower(),
        "prompt_sha256": card.prompt_sha256,
        "threshold": str(card.threshold),
        "eval_sets": ",".join(sets),
        "eval_backend": str(raw_metrics.get("backend", cfg.evaluate.backend)),
    }
    tags.update(card.lineage)
    if holdout is not None:
        tags.update(holdout[1])
    tags.update({f"eval_data.{s}": eval_data[s] for s in sets if s in eval_data})
    tags.update({tag_key(f"{METRIC_TAG_PREFIX}{k}"): repr(v) for k, v in flat.items()})
    tags.update({tag_key(k): str(v) for k, v in (lineage or {}).items()})
    tags = {k: str(v)[:5000] for k, v in tags.items()}
    params = {k: v for k, v in card.to_dict().items() if isinstance(v, (str, int, float, bool))}

    def _register() -> dict[str, Any]:
        setup(cfg)
        client = MlflowClient()
        existing = _find_registered(client, name, fingerprint)
        if existing is not None and existing.tags.get("metrics_sha256") == _metrics_sha(flat):
            aliases = list(getattr(existing, "aliases", []) or [])
            if not aliases:  # a registration cut off between the version and its alias: finish it
                client.set_registered_model_alias(name, CHALLENGER, existing.version)
                aliases = [CHALLENGER]
            return {"registered_model": name, "version": str(existing.version), "run_id": existing.run_id,
                    "model_uri": f"models:/{name}/{existing.version}", "already_registered": True,
                    "aliases": aliases}
        with stage_run(cfg, "register", tags={"detector_sha256": fingerprint}) as run:
            mlflow.log_params(params)
            mlflow.log_metrics({tag_key(k): v for k, v in flat.items()})
            mlflow.set_tags({k: v for k, v in tags.items() if not k.startswith(METRIC_TAG_PREFIX)})
            mlflow.log_dict(raw_metrics, "metrics.json")
            if holdout is not None:
                _log_feedback_holdout(holdout[0])
            info = mlflow.pyfunc.log_model(
                name="detector",
                python_model=str(MODEL_CODE),
                artifacts={DETECTOR_ARTIFACT: str(d.resolve())},
                code_paths=[str(MODEL_CODE.parent)],
                signature=signature(),
                pip_requirements=_pip_requirements(),
            )
            mv = mlflow.register_model(info.model_uri, name,
                                       tags={**tags, "metrics_sha256": _metrics_sha(flat),
                                             "run_id": run.info.run_id})
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
        return {"registered_model": name, "version": str(mv.version), "run_id": run.info.run_id,
                "model_uri": f"models:/{name}/{mv.version}", "already_registered": False,
                "aliases": [CHALLENGER], "parent_run_id": os.environ.get(PARENT_ENV)}

    result = with_retries(_register, cfg, f"registering {d}")
    result.update({"detector_dir": str(d), "tracking_uri": tracking_uri(cfg),
                   "metrics": {k: flat[k] for k in sorted(flat)}})
    return result


__all__ = ["RegistrationError", "RegistryUnavailableError", "check_feedback_holdout", "run_register"]
