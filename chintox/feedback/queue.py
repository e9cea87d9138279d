"""The review queue: which logged judgements moderators should label next (pure: no file I/O).

From the judgement log's rows that kept their text: one row per normalised text (its latest
judgement), leaving out texts already corrected, texts of the evaluation splits and texts an import
would refuse (blank, longer than ``data.max_text_chars``). Of ``size`` rows, ``round(size * (1 -
random_share))`` are the judgements nearest their threshold (``|score - threshold|`` ascending,
uncertainty sampling: where a correction teaches the detector most) and the rest a seeded random
sample of the remaining ones (calibration: an unbiased look at how often the detector is wrong).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from chintox.feedback import text_key
from chintox.textnorm import normalise_many

COLUMNS = ("prediction_id", "text", "model_version", "score", "predicted_label", "review_reason", "label",
           "note", "moderator")


def candidates(judgements: Iterable[Mapping[str, Any]], *, corrected: set[str], leak_keys: set[str],
               max_text_chars: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The latest judgement of each reviewable text (sorted by text_key) and the counts left out."""
    rows = [j for j in judgements if isinstance(j.get("text"), str)]
    norms = normalise_many([j["text"].strip() for j in rows])
    latest: dict[str, tuple[Mapping[str, Any], str]] = {}
    skipped = {"blank_or_too_long": 0, "corrected": 0, "leakage": 0}
    for j, norm in zip(rows, norms):
        stripped = j["text"].strip()
        if not stripped or len(stripped) > max_text_chars:
            skipped["blank_or_too_long"] += 1
            continue
        key = text_key(norm)
        old = latest.get(key)
        if old is None or (j["created_at"], j["id"]) >= (old[0]["created_at"], old[0]["id"]):
            latest[key] = (j, norm)
    out = []
    for key in sorted(latest):
        j, norm = latest[key]
        if key in corrected:
            skipped["corrected"] += 1
        elif norm in leak_keys:
            skipped["leakage"] += 1
        else:
            out.append({**j, "text_key": key})
    return out, skipped


def select(cands: list[dict[str, Any]], size: int, random_share: float, seed: int) -> list[dict[str, Any]]:
    """The queue: the uncertain rows first (nearest the threshold), then the random ones; each row
    in :data:`COLUMNS` with ``label``, ``note`` and ``moderator`` empty for the moderator."""
    n_uncertain = round(size * (1.0 - random_share))
    ranked = sorted(cands, key=lambda c: (abs(float(c["score"]) - float(c["threshold"])), c["text_key"]))
    uncertain, rest = ranked[:n_uncertain], ranked[n_uncertain:]
    rest.sort(key=lambda c: c["text_key"])
    sampled = random.Random(seed).sample(rest, min(size - len(uncertain), len(rest)))
    return [_queue_row(c, "uncertain") for c in uncertain] + [_queue_row(c, "random") for c in sampled]


def _queue_row(c: Mapping[str, Any], reason: str) -> dict[str, Any]:
    return {"prediction_id": c["id"], "text": c["text"], "model_version": c["model_version"],
            "score": c["score"], "predicted_label": c["label"], "review_reason": reason, "label": "",
            "note": "", "moderator": ""}


__all__ = ["COLUMNS", "candidates", "select"]
