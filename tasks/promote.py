"""Gated promotion and rollback of registered detectors (MLflow aliases ``challenger``/``champion``).

The gate compares a candidate version with the current champion on the same evaluation sets, using the
evaluation metrics recorded on each version at registration (tags ``metrics.*``, else the version's
run): ToxiCN test F1 must not fall by more than ``promote.min_f1_delta`` allows (new - old >=
min_f1_delta), COLD test accuracy may fall by at most ``promote.cold_accuracy_tolerance``. Versions
evaluated on different sets (or different evaluation data) are not comparable: the gate fails and says
why. ``force`` overrides a failed gate and needs a reason.

A candidate trained on moderators' feedback (tag ``feedback.trained=true``) must also beat the champion on
the feedback holdout it was registered with (the run's ``feedback/holdout.jsonl``, checked against the
tag ``feedback.holdout_sha256``): both detectors are downloaded (:func:`chintox.registry.download_detector`)
and scored on its rows by the same hf scorer (``evaluate.device``), each labelling at its own card's
threshold, and ``promote.feedback_metric`` must rise by more than ``promote.feedback_min_gain``. An empty
holdout fails this rule. With no champion there is nothing to compare with (as for the other rules).
:func:`gate` decides from the figures alone (:func:`feedback_figures`); :func:`feedback_holdout` computes
them from the registry.

Every decision is written on the version (tags ``promotion.*`` plus an append-only
``promotion.history``); the champion history lives in the registered model's tag
``champion_history`` so ``rollback`` can step back more than once.

Concurrency: promotions and rollbacks hold the registry's promotion lock (:mod:`chintox.locking`): a file
lock next to a store on this machine, a Prefect global concurrency limit for a tracking server that
several machines share. After moving the alias the result is read back and checked; a mismatch is an
error. Each decision says what serialised it (``serialised_by``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chintox.config import Config
from chintox.feedback import HOLDOUT_SET, read_jsonl
from chintox.locking import LockError, registry_lock
from chintox.metrics import binary_metrics, find_metric_key
from chintox.provenance import file_sha256
from chintox.registry import (
    CHALLENGER,
    CHAMPION,
    FEEDBACK_HOLDOUT_ARTIFACT,
    FEEDBACK_HOLDOUT_SHA_TAG,
    FEEDBACK_TRAINED_TAG,
    METRIC_TAG_PREFIX,
    DetectorDownloadError,
    download_detector,
    is_connection_error,
    version_by_alias,
    with_retries,
)
from chintox.tracking import setup, tracking_uri

log = logging.getLogger(__name__)

HISTORY_TAG = "champion_history"
LOCK_TIMEOUT_S = 300.0
GATED = (("toxicn_test", "f1"), ("cold_test", "accuracy"))
FEEDBACK_KEY = "feedback_holdout"  # the feedback rule's figures in the gate's comparison


class PromotionError(RuntimeError):
    """A promotion or rollback that cannot be done (no challenger, no history, bad arguments)."""


class PromotionConflictError(PromotionError):
    """The aliases read back after a change are not what this process set."""


# ------------------------------------------------------------------------------------------ lock
def lock_path(cfg: Config) -> Path:
    """A lock file next to the tracking store (SQLite / file store), else one per URI in the temp dir."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent / ".chintox-promote.lock"
    if uri.startswith("file://") or "://" not in uri:
        base = Path(uri.removeprefix("file://"))
        return base / ".chintox-promote.lock"
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"chintox-promote-{digest}.lock"


def _lock(cfg: Config) -> Any:
    """The promotion lock of the configured registry; entering it yields what holds it."""
    return registry_lock(tracking_uri(cfg), cfg.mlflow.registered_model, lock_path(cfg), LOCK_TIMEOUT_S)


# --------------------------------------------------------------------------------------- helpers
def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _client(cfg: Config) -> Any:
    from mlflow import MlflowClient

    setup(cfg)
    return MlflowClient()


def _history(client: Any, name: str) -> list[str]:
    rm = client.get_registered_model(name)
    raw = (rm.tags or {}).get(HISTORY_TAG)
    return [str(v) for v in json.loads(raw)] if raw else []


def _set_history(client: Any, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-200:]))


def version_metrics(client: Any, mv: Any) -> dict[str, float]:
    """Evaluation metrics recorded for a version: its ``metrics.*`` tags, else its run's metrics."""
    out = {k[len(METRIC_TAG_PREFIX):]: float(v) for k, v in (mv.tags or {}).items()
           if k.startswith(METRIC_TAG_PREFIX)}
    if not out and mv.run_id:
        out = dict(client.get_run(mv.run_id).data.metrics)
    return out


def _sets_of(mv: Any) -> list[str]:
    raw = (mv.tags or {}).get("eval_sets", "")
    return sorted(s for s in raw.split(",") if s)


def _eval_data(mv: Any) -> dict[str, str]:
    return {k[len("eval_data."):]: v for k, v in (mv.tags or {}).items() if k.startswith("eval_data.")}


def feedback_figures(labels: list[int], candidate_scores: list[float], champion_scores: list[float],
                     candidate_threshold: float, champion_threshold: float, metric: str,
                     sha256: str) -> dict[str, Any]:
    """What the feedback rule compares: ``metric`` of each detector on the holdout rows (``labels``), each
    labelling at its own threshold; ``candidate``/``champion`` are None for an empty holdout."""
    def value(scores: list[float], threshold: float) -> float | None:
        return float(binary_metrics(labels, scores, threshold)[metric]) if labels else None

    return {"set": HOLDOUT_SET, "sha256": sha256, "rows": len(labels), "metric": metric,
            "candidate": value(candidate_scores, candidate_threshold),
            "champion": value(champion_scores, champion_threshold)}


def feedback_rule(min_gain: float, figures: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    """The feedback rule on :func:`feedback_figures`: (passed, reason, figures with delta and min_gain).
    The candidate must beat the champion by more than ``min_gain``; an empty holdout fails."""
    n, metric, new, old = figures["rows"], figures["metric"], figures["candidate"], figures["champion"]
    if not n or new is None or old is None:
        return False, (f"feedback holdout (0 rows, sha256 {str(figures['sha256'])[:12]}...) is empty: the candidate "
                       "was trained on feedback but cannot be shown to do better on held-out feedback: FAIL"), \
            {**figures, "delta": None, "min_gain": min_gain}
    delta = new - old
    out = {**figures, "delta": round(delta, 6), "min_gain": min_gain}
    if delta > min_gain + 1e-12:
        return True, (f"feedback holdout ({n} rows): {metric} {new:.3f} beats the champion's {old:.3f} by "
                      f"{delta:+.3f} (needs more than {min_gain}): ok"), out
    return False, (f"feedback holdout ({n} rows): {metric} {new:.3f} does not beat the champion's {old:.3f} by "
                   f"more than {min_gain}: FAIL"), out


def gate(cfg: Config, candidate: dict[str, float], champion: dict[str, float] | None,
         cand_sets: list[str], champ_sets: list[str] | None,
         cand_data: dict[str, str] | None = None, champ_data: dict[str, str] | None = None,
         feedback: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pure gate decision: ``{"passed": bool, "reasons": [...], "comparison": {...}}``; ``feedback``: the
    :func:`feedback_figures` of a candidate trained on feedback (ignored with no champion)."""
    reasons: list[str] = []
    comparison: dict[str, Any] = {}
    needed = sorted({s for s, _ in GATED})
    missing_sets = [s for s in needed if s not in cand_sets]
    if missing_sets:
        reasons.append(f"candidate was not evaluated on {missing_sets} (has {cand_sets})")
    if champion is None:
        if not reasons:
            reasons.append("no current champion: first promotion")
        return {"passed": not missing_sets, "reasons": reasons, "comparison": comparison}
    feedback_ok = True
    if feedback is not None:
        feedback_ok, line, comparison[FEEDBACK_KEY] = feedback_rule(cfg.promote.feedback_min_gain, feedback)
        reasons.append(line)
    if sorted(cand_sets) != sorted(champ_sets or []):
        reasons.append(f"evaluation sets differ: candidate {cand_sets}, champion {champ_sets}; "
                       "re-evaluate both on the same sets")
        return {"passed": False, "reasons": reasons, "comparison": comparison}
    if cand_data and champ_data:
        differ = sorted(s for s in needed if s in cand_data and s in champ_data
                        and cand_data[s] != champ_data[s])
        if differ:
            reasons.append(f"evaluation data differ on {differ} (content hashes); re-evaluate the "
                           "champion on the current data")
            return {"passed": False, "reasons": reasons, "comparison": comparison}
    passed = not missing_sets and feedback_ok
    for eval_set, metric in GATED:
        kc, kp = find_metric_key(candidate, eval_set, metric), find_metric_key(champion, eval_set, metric)
        if kc is None or kp is None:
            passed = False
            reasons.append(f"{eval_set} {metric} missing on the "
                           f"{'candidate' if kc is None else 'champion'}")
            continue
        new, old = candidate[kc], champion[kp]
        delta = new - old
        comparison[f"{eval_set}.{metric}"] = {"candidate": new, "champion": old, "delta": round(delta, 6)}
        if metric == "f1":
            ok = delta >= cfg.promote.min_f1_delta - 1e-12
            rule = f"delta >= {cfg.promote.min_f1_delta}"
        else:
            ok = delta >= -cfg.promote.cold_accuracy_tolerance - 1e-12
            rule = f"delta >= -{cfg.promote.cold_accuracy_tolerance}"
        reasons.append(f"{eval_set} {metric}: {new:.4f} vs {old:.4f} (delta {delta:+.4f}, needs {rule}): "
                       f"{'ok' if ok else 'FAIL'}")
        passed = passed and ok
    return {"passed": passed, "reasons": reasons, "comparison": comparison}


def feedback_holdout(cfg: Config, cand: Any, champ: Any | None) -> dict[str, Any] | None:
    """:func:`feedback_figures` of candidate version ``cand`` against ``champ``: its feedback holdout (the
    run's artifact, checked against its tag) scored by both detectors; None when the candidate was not
    trained on feedback or there is no champion."""
    import mlflow

    from chintox.detector import Detector

    tags = cand.tags or {}
    if champ is None or tags.get(FEEDBACK_TRAINED_TAG) != "true":
        return None
    want, run_id = tags.get(FEEDBACK_HOLDOUT_SHA_TAG), cand.run_id or tags.get("run_id")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=FEEDBACK_HOLDOUT_ARTIFACT,
                                                       dst_path=tmp)
        except Exception as e:
            if is_connection_error(e):
                raise
            raise PromotionError(f"version {cand.version} was trained on feedback but its run {run_id} has no "
                                 f"{FEEDBACK_HOLDOUT_ARTIFACT} ({e}); re-register it (`chintox register`)") from e
        got = file_sha256(path)
        if got != want:
            raise PromotionError(f"version {cand.version}: the feedback holdout on its run (sha256 {got}) is not "
                                 f"the one it was registered with ({FEEDBACK_HOLDOUT_SHA_TAG} {want})")
        rows = read_jsonl(path)
    labels, texts = [int(r["label"]) for r in rows], [str(r["text"]) for r in rows]
    scored: list[tuple[list[float], float]] = []  # (scores, its card's threshold): candidate, then champion
    for mv in (cand, champ) if rows else ():
        try:
            folder = download_detector(cfg, mv.version, detector_cache(cfg))
        except DetectorDownloadError as e:
            raise PromotionError(f"scoring the feedback holdout: {e}") from e
        det = Detector(folder, backend="hf", device=cfg.evaluate.device, batch_size=cfg.evaluate.batch_size)
        try:
            scored.append((det.scores(texts), det.threshold))
        finally:
            det.close()
    (cand_scores, cand_threshold), (champ_scores, champ_threshold) = scored or [([], 0.5)] * 2
    return feedback_figures(labels, cand_scores, champ_scores, cand_threshold, champ_threshold,
                            cfg.promote.feedback_metric, got)


def detector_cache(cfg: Config) -> Path:
    """Where the gate keeps downloaded detectors: beside the lock, so one per tracking store."""
    lock = lock_path(cfg)
    return lock.parent / f"{lock.stem}-detectors"


def _record(client: Any, name: str, version: str, decision: dict[str, Any]) -> None:
    """Write a decision on the version: latest in ``promotion.*``, all in ``promotion.history``."""
    g = decision.get("gate") or {}
    flat = {
        "promotion.decision": decision["decision"],
        "promotion.at": decision["at"],
        "promotion.reason": decision.get("reason") or "",
        "promotion.compared_to": str(decision.get("compared_to") or ""),
        "promotion.gate": ("pass" if g.get("passed") else "fail") if g else "n/a",
        "promotion.metrics": json.dumps(g.get("comparison", {}))[:5000],
        "promotion.reasons": " | ".join(g.get("reasons", []))[:5000],
    }
    feedback = g.get("comparison", {}).get(FEEDBACK_KEY)
    if feedback:
        flat[f"promotion.{FEEDBACK_KEY}"] = json.dumps(feedback)
    mv = client.get_model_version(name, version)
    hist = json.loads((mv.tags or {}).get("promotion.history", "[]"))
    entry = {k: decision.get(k) for k in ("decision", "at", "reason", "compared_to", "by")}
    if feedback:
        entry[FEEDBACK_KEY] = {k: feedback[k] for k in ("rows", "metric", "candidate", "champion", "delta")}
    hist.append(entry)
    raw = json.dumps(hist)
    while len(raw) > 5000 and len(hist) > 1:
        hist.pop(0)
        raw = json.dumps(hist)
    flat["promotion.history"] = raw
    for k, v in flat.items():
        client.set_model_version_tag(name, version, k, v)


def _move_champion(client: Any, name: str, version: str, history: list[str]) -> None:
    client.set_registered_model_alias(name, CHAMPION, version)
    _set_history(client, name, history)
    # verify: read back both and check they agree with what this process set
    got = version_by_alias(client, name, CHAMPION)
    hist = _history(client, name)
    if got is None or str(got.version) != str(version) or (hist and hist[-1] != str(version)):
        raise PromotionConflictError(
            f"after setting {CHAMPION}={version} the registry shows {CHAMPION}="
            f"{getattr(got, 'version', None)} and history {hist[-3:]}: another process changed the "
            "aliases concurrently (does every promoter use the same promotion lock? see chintox.locking)"
        )


# ------------------------------------------------------------------------------------- commands
def run_promote(cfg: Config, version: str | int | None = None, force: bool = False,
                reason: str | None = None) -> dict[str, Any]:
    """Promote ``version`` (default: the ``challenger``) to ``champion`` if the gate passes or forced."""
    if force and not (reason and reason.strip()):
        raise PromotionError("--force needs --reason: the override is recorded on the version")
    name = cfg.mlflow.registered_model

    def _do() -> dict[str, Any]:
        client = _client(cfg)
        with _lock(cfg) as held:
            if version is not None:
                cand = client.get_model_version(name, str(version))
            else:
                cand = version_by_alias(client, name, CHALLENGER)
                if cand is None:
                    raise PromotionError(
                        f"no version of {name!r} has the alias {CHALLENGER!r}: register one "
                        "(`chintox register`) or pass --version")
            champ = version_by_alias(client, name, CHAMPION)
            base = {"registered_model": name, "version": str(cand.version), "at": _now(),
                    "compared_to": str(champ.version) if champ else None, "tracking_uri": tracking_uri(cfg),
                    "serialised_by": held}
            if champ is not None and str(champ.version) == str(cand.version):
                decision = {**base, "decision": "already_champion", "promoted": False,
                            "reason": reason, "gate": None}
                _record(client, name, str(cand.version), decision)
                return decision
            g = gate(cfg, version_metrics(client, cand), version_metrics(client, champ) if champ else None,
                     _sets_of(cand), _sets_of(champ) if champ else None,
                     _eval_data(cand), _eval_data(champ) if champ else None,
                     feedback=feedback_holdout(cfg, cand, champ))
            if g["passed"]:
                kind = "promoted"
            elif force:
                kind = "forced"
            else:
                decision = {**base, "decision": "rejected", "promoted": False, "reason": reason, "gate": g}
                _record(client, name, str(cand.version), decision)
                return decision
            history = _history(client, name)
            if champ is not None and (not history or history[-1] != str(champ.version)):
                history.append(str(champ.version))  # champion set by hand outside this tool
            history.append(str(cand.version))
            _move_champion(client, name, str(cand.version), history)
            chal = version_by_alias(client, name, CHALLENGER)
            if chal is not None and str(chal.version) == str(cand.version):
                client.delete_registered_model_alias(name, CHALLENGER)
            decision = {**base, "decision": kind, "promoted": True, "reason": reason, "gate": g,
                        "champion": str(cand.version), "previous_champion": base["compared_to"]}
            _record(client, name, str(cand.version), decision)
            return decision

    try:
        return with_retries(_do, cfg, f"promoting {name}")
    except LockError as e:
        raise PromotionError(str(e)) from e


def run_rollback(cfg: Config) -> dict[str, Any]:
    """Move ``champion`` back to the previous champion in the history (repeatable)."""
    name = cfg.mlflow.registered_model

    def _do() -> dict[str, Any]:
        client = _client(cfg)
        with _lock(cfg) as held:
            champ = version_by_alias(client, name, CHAMPION)
            if champ is None:
                raise PromotionError(f"{name!r} has no {CHAMPION!r}: nothing to roll back")
            history = _history(client, name)
            if history and history[-1] == str(champ.version):
                history.pop()
            if not history:
                raise PromotionError(
                    f"no earlier champion of {name!r} recorded before version {champ.version}: nothing to "
                    "roll back to")
            previous = history[-1]
            _move_champion(client, name, previous, history)
            at = _now()
            _record(client, name, str(champ.version),
                    {"decision": "rolled_back", "at": at, "reason": f"rollback to version {previous}",
                     "compared_to": previous})
            _record(client, name, previous,
                    {"decision": "restored", "at": at, "reason": f"rollback from version {champ.version}",
                     "compared_to": str(champ.version)})
            return {"registered_model": name, "decision": "rolled_back", "at": at,
                    "champion": previous, "rolled_back_version": str(champ.version),
                    "history": history, "serialised_by": held}

    try:
        return with_retries(_do, cfg, f"rolling back {name}")
    except LockError as e:
        raise PromotionError(str(e)) from e
