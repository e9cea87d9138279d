"""Moderators' corrections: the feedback store and the feedback sets, their layout and record types.

This module owns the two contracts of the feedback loop; the steps in ``tasks/feedback.py`` are their
only writers, and stage 2, registration and the promotion gate read them through the functions here.

**The store** (``<feedback.store>/``, the output of DVC stage ``feedback_store``, ``persist: true``):
every import appends to it, then ``dvc commit`` records it as a new DVC version (``dvc.lock``, pushed
with ``dvc push``). Nothing is ever deleted from it:

- ``corrections.jsonl``: the accepted corrections, :class:`CorrectionRecord`, in import order;
- ``quarantine.jsonl``: the refused rows, :class:`QuarantineRecord` (file, row, rule, message, raw row);
- ``imports.jsonl``: one :class:`ImportRecord` per imported file (its sha256 makes a re-import a no-op).

**The feedback sets** (``<data.out_dir>/feedback/``, the output of DVC stage ``feedback``; what stage 2
reads): ``train.jsonl`` and ``holdout.jsonl``, :class:`FeedbackRow` rows, one per corrected text after
the conflict rule (``feedback.conflicts``). Both are empty unless ``feedback.train`` is on, so importing
corrections never retrains a detector that does not use them. Whether a text is in the holdout depends
only on its normalised text (:func:`feedback_part`), so a held-out text is never trained on, in any
later version either. ``source.json`` there names the store version they were derived from
(:data:`SOURCE_FILE`: the store's content sha256 and its counts). ``<data.out_dir>/feedback_summary.json``
(DVC metrics) counts both sets and the conflicts resolved.

All files are UTF-8 JSON lines, ``ensure_ascii=False``, ``\\n`` line ends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict

CORRECTIONS = "corrections.jsonl"
QUARANTINE = "quarantine.jsonl"
IMPORTS = "imports.jsonl"
STORE_FILES = (CORRECTIONS, QUARANTINE, IMPORTS)
SETS_DIR = "feedback"                      # under data.out_dir
TRAIN_FILE = "train.jsonl"
HOLDOUT_FILE = "holdout.jsonl"
SOURCE_FILE = "source.json"                # {"store_sha256", "corrections", "imports"}: the store version used
SUMMARY_FILE = "feedback_summary.json"     # under data.out_dir
HOLDOUT_SET = "feedback_holdout"           # its name as an evaluation set (gate, reports)
SOURCE = "feedback"


class FeedbackError(RuntimeError):
    """A feedback file or store that cannot be used; the message names the file (and row, rule)."""


class CorrectionRecord(TypedDict):
    id: str                      # "fb-<import_id[:12]>-<row>"
    text: str
    label: int                   # the moderator's label, 1 = toxic
    text_key: str                # sha256 of the normalised text (chintox.textnorm.normalise)
    prediction_id: str | None    # the judgement corrected, when the file named one
    model_version: str | None    # the version that judged it (from the judgement log)
    predicted_label: int | None  # what that version said
    note: str | None
    moderator: str | None
    import_id: str               # sha256 of the imported file's bytes
    file: str                    # the file's name as given
    row: int                     # 1-based data row of the file (the header is row 0)
    imported_at: str             # ISO 8601, UTC


class QuarantineRecord(TypedDict):
    import_id: str
    file: str
    row: int
    rule: str
    message: str
    raw: dict[str, Any]


class ImportRecord(TypedDict):
    import_id: str
    file: str
    imported_at: str
    rows_read: int
    accepted: int
    quarantined: int
    by_rule: dict[str, int]


class FeedbackRow(TypedDict):
    id: str
    text: str
    label: int
    source: str                  # "feedback"
    split: str                   # "train" | "holdout"
    text_key: str
    corrections: int             # corrections of this text in the store (after the rule: one label)


def text_key(normalised: str) -> str:
    """The identity of a corrected text: sha256 of its normalised form."""
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def feedback_part(key: str, holdout_share: float) -> Literal["train", "holdout"]:
    """``holdout`` for a fixed share of texts, decided by the text alone (never by import order)."""
    return "holdout" if int(key[:12], 16) / float(1 << 48) < holdout_share else "train"


def store_path(store: str | Path, name: str) -> Path:
    if name not in STORE_FILES:
        raise ValueError(f"unknown store file {name!r}; expected one of {list(STORE_FILES)}")
    return Path(store) / name


def sets_path(out_dir: str | Path, name: str) -> Path:
    if name not in (TRAIN_FILE, HOLDOUT_FILE, SOURCE_FILE):
        raise ValueError(f"unknown feedback set {name!r}")
    return Path(out_dir) / SETS_DIR / name


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a missing file is an empty one."""
    p = Path(path)
    if not p.is_file():
        return []
    with open(p, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]], append: bool = False) -> str:
    """Write (or append) rows; return the sha256 of the file's bytes afterwards."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a" if append else "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return hashlib.sha256(p.read_bytes()).hexdigest()


def load_feedback_set(out_dir: str | Path, name: str) -> list[FeedbackRow]:
    """``train.jsonl`` or ``holdout.jsonl`` of the feedback sets (empty when absent)."""
    return read_jsonl(sets_path(out_dir, name))  # type: ignore[return-value]


__all__ = [
    "CORRECTIONS", "HOLDOUT_FILE", "HOLDOUT_SET", "IMPORTS", "QUARANTINE", "SETS_DIR", "SOURCE", "SOURCE_FILE",
    "STORE_FILES",
    "SUMMARY_FILE", "TRAIN_FILE", "CorrectionRecord", "FeedbackError", "FeedbackRow", "ImportRecord",
    "QuarantineRecord", "feedback_part", "load_feedback_set", "read_jsonl", "sets_path", "store_path",
    "text_key", "write_jsonl",
]
