"""The MLflow model registry's shared contracts: alias names, connection-error retries, alias read-back,
tag keys and the download of a version's detector folder. The register, promote, detect and serve steps
and the flows use these; none defines its own.

An unreachable tracking server is retried a few times with exponential backoff
(``CHINTOX_MLFLOW_ATTEMPTS``, default 4; ``CHINTOX_MLFLOW_BACKOFF_S``, default 2: 2, 4, 8 s), then
reported as :class:`RegistryUnavailableError` naming the tracking URI. Other errors are raised at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from chintox.feedback import HOLDOUT_FILE, SETS_DIR
from chintox.tracking import tracking_uri

log = logging.getLogger(__name__)
T = TypeVar("T")

CHALLENGER = "challenger"
CHAMPION = "champion"
METRIC_TAG_PREFIX = "metrics."  # a version's evaluation metrics, as tags (the promotion gate reads them)
ATTEMPTS_ENV = "CHINTOX_MLFLOW_ATTEMPTS"
BACKOFF_ENV = "CHINTOX_MLFLOW_BACKOFF_S"


DETECTOR_TAG = "detector_sha256"  # a version's tag: the content hash of the detector folder registered
COMPLETE = ".complete"            # in a downloaded version's folder: {"detector": <rel path>, "detector_sha256"}
# a version trained on moderators' feedback: these tags, and its feedback holdout on its run at this path
FEEDBACK_TRAINED_TAG = "feedback.trained"              # "true"
FEEDBACK_HOLDOUT_SHA_TAG = "feedback.holdout_sha256"   # = its card's lineage data.feedback_holdout
FEEDBACK_HOLDOUT_ROWS_TAG = "feedback.holdout_rows"
# corrections in the feedback store when the version's feedback sets were derived (set by the flows;
# retrain-on-feedback counts new corrections from the champion's value)
FEEDBACK_CORRECTIONS_TAG = "feedback.corrections"
FEEDBACK_HOLDOUT_ARTIFACT = f"{SETS_DIR}/{HOLDOUT_FILE}"  # feedback/holdout.jsonl


class RegistryUnavailableError(RuntimeError):
    """The MLflow tracking server / registry could not be reached after retries."""


class DetectorDownloadError(RuntimeError):
    """A registered version whose detector folder cannot be had: none logged, or not the one registered."""


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


def with_retries(fn: Callable[[], T], cfg: Any, what: str, attempts: int | None = None,
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


def version_by_alias(client: Any, name: str, alias: str) -> Any | None:
    """The version behind ``alias`` of registered model ``name``, or None when no version has it
    (a connection error is raised, so callers under :func:`with_retries` retry it)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if is_connection_error(e):
            raise
        return None


def download_detector(cfg: Any, version: str | int, cache_dir: str | Path) -> Path:
    """The detector folder of registered ``version`` of ``mlflow.registered_model``, downloaded once into
    ``<cache_dir>/<name>/v<version>`` and checked against the version's ``detector_sha256`` tag; a later
    call returns the cached folder. :class:`DetectorDownloadError` when the version holds no detector
    folder or a different one; a connection error is retried (:func:`with_retries`)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME

    from chintox.provenance import dir_sha256
    from chintox.pyfunc import DETECTOR_ARTIFACT
    from chintox.tracking import setup

    name, version = cfg.mlflow.registered_model, str(version)
    dest = Path(cache_dir) / name / f"v{version}"
    if (dest / COMPLETE).is_file():
        return dest / json.loads((dest / COMPLETE).read_text(encoding="utf-8"))["detector"]
    setup(cfg)
    mv = with_retries(lambda: MlflowClient().get_model_version(name, version), cfg, f"reading version {version}")
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    with_retries(lambda: mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                             dst_path=str(part)), cfg, f"downloading version {version}")
    arts = Model.load(str(part / MLMODEL_FILE_NAME)).flavors.get("python_function", {}).get("artifacts") or {}
    rel = (arts.get(DETECTOR_ARTIFACT) or {}).get("path")
    if not rel or not (part / rel / "detector.json").is_file():
        raise DetectorDownloadError(f"version {version} of {name!r} has no detector folder (pyfunc artifact "
                                    f"{DETECTOR_ARTIFACT!r}); was it registered with `chintox register`?")
    want = (mv.tags or {}).get(DETECTOR_TAG)
    if want and dir_sha256(part / rel) != want:
        raise DetectorDownloadError(f"version {version} of {name!r}: the downloaded detector does not match "
                                    f"the {DETECTOR_TAG} it was registered with ({want[:12]}...)")
    shutil.rmtree(dest, ignore_errors=True)
    part.rename(dest)
    (dest / COMPLETE).write_text(json.dumps({"detector": rel, DETECTOR_TAG: want}), encoding="utf-8")
    return dest / rel


def tag_key(k: str) -> str:
    """``k`` as a valid MLflow tag / metric key (other characters become ``_``; at most 250)."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in k)[:250]


__all__ = [
    "ATTEMPTS_ENV",
    "BACKOFF_ENV",
    "CHALLENGER",
    "CHAMPION",
    "COMPLETE",
    "DETECTOR_TAG",
    "FEEDBACK_CORRECTIONS_TAG",
    "FEEDBACK_HOLDOUT_ARTIFACT",
    "FEEDBACK_HOLDOUT_ROWS_TAG",
    "FEEDBACK_HOLDOUT_SHA_TAG",
    "FEEDBACK_TRAINED_TAG",
    "METRIC_TAG_PREFIX",
    "DetectorDownloadError",
    "RegistryUnavailableError",
    "download_detector",
    "is_connection_error",
    "tag_key",
    "version_by_alias",
    "with_retries",
]
