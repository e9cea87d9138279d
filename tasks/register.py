"""Register step: log the trained detector as an MLflow pyfunc and register it as a new version.

The version holds the detector folder (model or base plus adapter, tokenizer, prompt, threshold) behind
:class:`chintox.pyfunc.DetectorModel`; its tags carry the git commit, the DVC hashes of the data, the
profile and the evaluation metrics that the promotion gate compares. The new version gets the alias
``challenger``. Registration is an MLflow side effect, so it is not a DVC stage.

An unreachable tracking server is retried a few times with backoff, then reported with the tracking URI;
nothing on disk is touched, so re-running ``chintox register`` (or the flow, whose training tasks are
cached) registers the same detector without retraining. Registering a detector whose files and
metrics are already registered returns that version instead of adding a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from chintox.config import Config
from chintox.pyfunc import DETECTOR_ARTIFACT, DetectorModel, check_detector_dir, signature
from chintox.tracking import PARENT_ENV, setup, stage_run, tracking_uri

log = logging.getLogger(__name__)
T = TypeVar("T")

CHALLENGER = "challenger"
CHAMPION = "champion"
METRIC_TAG_PREFIX = "metrics."
ATTEMPTS_ENV = "CHINTOX_MLFLOW_ATTEMPTS"      # default 4
BACKOFF_ENV = "CHINTOX_MLFLOW_BACKOFF_S"      # default 2 (2, 4, 8 s between attempts)


class RegistryUnavailableError(RuntimeError):
    """The MLflow tracking server / registry could not be reached after retries."""


class RegistrationError(RuntimeError):
    """A detector that cannot be registered (missing evaluation metrics, bad folder)."""


# ----------------------------------------------------------------------------------------- retries
_CONNECTION_HINTS = (
    "connection refused", "max retries exceeded", "failed to establish a new connection",
    "connectionerror", "connection aborted", "read timed out", "connecttimeout", "name or service not known",
    "remote end closed connection", "temporarily unavailable", "database is locked",
)


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean "the store is not reachable right now" (worth a retry)."""
    try:
        import requests

        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(h in text for h in _CONNECTION_HINTS)


def with_retries(fn: Callable[[], T], cfg: Config, what: str, attempts: int | None = None,
                 backoff_s: float | None = None) -> T:
    """Call ``fn``; on a connection error retry with exponential backoff, then raise a clear error."""
    attempts = attempts or int(os.environ.get(ATTEMPTS_ENV, "4"))
    backoff_s = float(os.environ.get(BACKOFF_ENV, "2")) if backoff_s is None else backoff_s
    uri = tracking_uri(cfg)
    last: BaseException | None = None
    for i in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            if not is_connection_error(e):
                raise
            last = e
            log.warning("%s: MLflow at %s not reachable (attempt %d/%d): %s", what, uri, i, attempts,
                        str(e).splitlines()[0][:300])
            if i < attempts:
                time.sleep(backoff_s * 2 ** (i - 1))
    raise RegistryUnavailableError(
        f"{what} failed: the MLflow tracking server at {uri} could not be reached after {attempts} "
        f"attempts ({type(last).__name__}: {str(last).splitlines()[0][:300]}). Start it (see README, "
        "`mlflow server --host 127.0.0.1 ...`) or set MLFLOW_TRACKING_URI, then re-run; nothing on "
        "disk was changed, so no retraining is needed."
    ) from last


# ------------------------------------------------------------------------------------ provenance
def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def git_dirty(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "unknown" if out.returncode else str(bool(out.stdout.strip())).lower()


def _sha256_file(p: Path, h: Any | None = None) -> str:
    h = h or hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_sha256(d: Path) -> str:
    """Content hash of every file under ``d`` (relative names included)."""
    h = hashlib.sha256()
    for p in sorted(x for x in d.rglob("*") if x.is_file()):
        h.update(p.relative_to(d).as_posix().encode())
        h.update(b"\0")
        _sha256_file(p, h)
        h.update(b"\0")
    return h.hexdigest()


def data_hashes(cfg: Config) -> dict[str, str]:
    """``{tag: hash}`` of the pipeline's data: dvc.lock outs under the data folder when there is a
    dvc.lock next to params.yaml, else a content hash of each file in the data folder."""
    import yaml

    root = Path(cfg.source).parent if cfg.source and cfg.source != "<dict>" else Path.cwd()
    lock = root / "dvc.lock"
    data_dir = Path(cfg.data.out_dir)
    out: dict[str, str] = {}
    inside = data_dir.resolve().is_relative_to(root.resolve())
    if lock.is_file() and inside:  # dvc.lock describes this data only when the data is in that repo
        try:
            stages = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
        except yaml.YAMLError:
            stages = {}
        for stage in stages.values():
            for o in stage.get("outs", []) or []:
                path = str(o.get("path", ""))
                h = o.get("md5") or o.get("hash") or o.get("etag")
                if h and path.startswith((Path(cfg.data.out_dir).name, "data")):
                    out[f"dvc.{path}"] = str(h)
        if out:
            return out
    if data_dir.is_dir():
        for p in sorted(x for x in data_dir.rglob("*") if x.is_file() and ".dvc" not in x.parts):
            out[f"data.{p.relative_to(data_dir).as_posix()}"] = _sha256_file(p)[:16]
    return out


def eval_set_hashes(cfg: Config, sets: list[str]) -> dict[str, str]:
    """Content hash of each evaluation set's file(s) (files in the data folder named after the set)."""
    data_dir = Path(cfg.data.out_dir)
    out: dict[str, str] = {}
    for s in sets:
        files = sorted(p for p in data_dir.rglob(f"{s}.*") if p.is_file()) if data_dir.is_dir() else []
        if files:
            h = hashlib.sha256()
            for p in files:
                _sha256_file(p, h)
            out[s] = h.hexdigest()[:16]
    return out


# --------------------------------------------------------------------------------------- metrics
def flatten_metrics(obj: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested metrics mapping as ``a.b.c`` keys."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_metrics(v, f"{prefix}{k}."))
    elif isinstance(obj, bool):
        pass
    elif isinstance(obj, (int, float)):
        out[prefix[:-1]] = float(obj)
    return out


def metrics_path(cfg: Config) -> Path:
    return Path(cfg.paths.reports) / "metrics.json"


def load_eval_metrics(cfg: Config) -> dict[str, Any]:
    p = metrics_path(cfg)
    if not p.is_file():
        raise RegistrationError(
            f"no evaluation metrics at {p.resolve()}: run `chintox evaluate` first; the promotion gate "
            "compares versions on these metrics"
        )
    return json.loads(p.read_text(encoding="utf-8"))


def evaluated_sets(cfg: Config, flat: dict[str, float]) -> list[str]:
    return sorted(s for s in cfg.evaluate.sets if any(find_metric_key(flat, s, m) for m in
                                                       ("f1", "accuracy")))


GATE_VARIANTS = ("tuned", "default")  # metrics.json: <set>.tuned.* at the detector's own threshold


def find_metric_key(flat: dict[str, Any], eval_set: str, metric: str) -> str | None:
    """The key of ``metric`` on ``eval_set`` in flattened metrics, preferring the value at the
    detector's own (tuned) threshold, which is what the registered pyfunc uses: ``set.tuned.metric``,
    ``set.default.metric``, ``set.metric`` (also with ``_`` or ``/``, or under a prefix); else None."""
    candidates = [f"{eval_set}.{v}.{metric}" for v in GATE_VARIANTS]
    candidates += [f"{eval_set}{sep}{metric}" for sep in (".", "_", "/")]
    for c in candidates:
        if c in flat:
            return c
    for c in candidates:
        for k in sorted(flat, key=len):
            if k.endswith(f".{c}"):
                return k
    return None


def _mlflow_key(k: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in k)[:250]


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "torch", "transformers", "tokenizers", "peft", "safetensors", "pandas", "pyyaml"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


# ------------------------------------------------------------------------------------- register
def _find_registered(client: Any, name: str, fingerprint: str) -> Any | None:
    try:
        hits = client.search_model_versions(f"name='{name}' and tags.detector_sha256='{fingerprint}'")
    except Exception as e:
        if is_connection_error(e):
            raise
        return None  # registered model does not exist yet, or tag search unsupported
    return max(hits, key=lambda v: int(v.version)) if hits else None


def run_register(cfg: Config, model_dir: str | Path | None = None) -> dict[str, Any]:
    """Register the detector in ``model_dir`` (default ``<paths.models>/stage2``); returns a summary."""
    import mlflow
    from mlflow import MlflowClient

    d = Path(model_dir) if model_dir else Path(cfg.paths.models) / "stage2"
    meta = check_detector_dir(d)
    raw_metrics = load_eval_metrics(cfg)
    flat = flatten_metrics(raw_metrics)
    sets = evaluated_sets(cfg, flat)
    if not sets:
        raise RegistrationError(
            f"{metrics_path(cfg)} has no metrics for the evaluation sets {cfg.evaluate.sets}"
        )
    if metrics_path(cfg).stat().st_mtime < (d / "detector.json").stat().st_mtime:
        log.warning("%s is older than %s: the metrics may belong to an earlier detector",
                    metrics_path(cfg), d / "detector.json")
    name = cfg.mlflow.registered_model
    fingerprint = dir_sha256(d)
    repo_dir = Path(cfg.source).parent if cfg.source and cfg.source != "<dict>" else None
    tags: dict[str, str] = {
        "git_commit": git_commit(repo_dir),
        "git_dirty": git_dirty(repo_dir),
        "profile": cfg.profile,
        "detector_sha256": fingerprint,
        "base_model": str(meta.get("base_model", cfg.model.base)),
        "stage1_enabled": str(meta.get("stage1_enabled", cfg.train.stage1.enabled)).lower(),
        "prompt_sha256": str(meta.get("prompt_sha256", "")),
        "threshold": str(meta.get("threshold", cfg.evaluate.threshold)),
        "eval_sets": ",".join(sets),
        "eval_backend": str(raw_metrics.get("backend", cfg.evaluate.backend))
        if isinstance(raw_metrics, dict) else cfg.evaluate.backend,
    }
    tags.update({_mlflow_key(k): v for k, v in data_hashes(cfg).items()})
    tags.update({f"eval_data.{s}": h for s, h in eval_set_hashes(cfg, sets).items()})
    tags.update({_mlflow_key(f"{METRIC_TAG_PREFIX}{k}"): repr(v) for k, v in flat.items()})
    tags = {k: str(v)[:5000] for k, v in tags.items()}

    def _register() -> dict[str, Any]:
        setup(cfg)
        client = MlflowClient()
        existing = _find_registered(client, name, fingerprint)
        if existing is not None and existing.tags.get("metrics_sha256") == _metrics_sha(flat):
            return {"registered_model": name, "version": str(existing.version), "run_id": existing.run_id,
                    "model_uri": f"models:/{name}/{existing.version}", "already_registered": True,
                    "aliases": list(getattr(existing, "aliases", []) or [])}
        with stage_run(cfg, "register", tags={"detector_sha256": fingerprint}) as run:
            mlflow.log_params({k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))})
            mlflow.log_metrics({_mlflow_key(k): v for k, v in flat.items()})
            mlflow.set_tags({k: v for k, v in tags.items() if not k.startswith(METRIC_TAG_PREFIX)})
            mlflow.log_dict(raw_metrics, "metrics.json")
            info = mlflow.pyfunc.log_model(
                name="detector",
                python_model=DetectorModel(),
                artifacts={DETECTOR_ARTIFACT: str(d.resolve())},
                code_paths=[str(Path(__file__).resolve().parents[1] / "chintox")],
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


def _metrics_sha(flat: dict[str, float]) -> str:
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]
