"""The split files: their names, where they live, what a row holds, and how they are written and read.

This module owns the contract between the split step (:func:`tasks.split.run_split`, the only writer)
and every step that reads the splits (base, stage 1 and 2, evaluation, Table 1 and its TF-IDF row).

Layout: ``<data.out_dir>/splits/<name>.jsonl`` for each ``name`` in :data:`SPLITS`; UTF-8 JSON lines,
one record per line, ``\\n`` line ends, ``ensure_ascii=False``, rows in the order written, so the
same rows give byte-identical files.

- ``toxicn_train``, ``toxicn_val``, ``toxicn_test``, ``cold_test``: :class:`LabelledRecord` rows.
- ``stage1``: :class:`ChatRecord` rows (COIG-CQIA as a user turn and the assistant's reply).
- ``cold_train``: :class:`TextRecord` rows, COLD train without its labels: text the tiny base may
  pre-train on (``model.tiny.pretrain_cold_train``), never a labelled training set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict, overload

SplitName = Literal["toxicn_train", "toxicn_val", "toxicn_test", "cold_test", "stage1", "cold_train"]
LabelledSplit = Literal["toxicn_train", "toxicn_val", "toxicn_test", "cold_test"]
SPLITS: tuple[SplitName, ...] = ("toxicn_train", "toxicn_val", "toxicn_test", "cold_test", "stage1", "cold_train")
# the texts no training-side use may contain (normalised match): the validation and evaluation sets
HELD_OUT_SPLITS: tuple[LabelledSplit, ...] = ("toxicn_val", "toxicn_test", "cold_test")
SPLIT_DIR = "splits"


class LabelledRecord(TypedDict, total=False):
    """A ToxiCN or COLD row. ``id``..``split`` are always present; the category fields of the source
    follow (ToxiCN: topic, toxic_type, expression, target, platform; COLD: topic,
    fine_grained_label), ``None`` where the raw row has none."""

    id: str
    text: str
    label: int  # 1 = toxic
    source: str  # "toxicn" | "cold"
    split: str  # "train" | "val" | "test"
    topic: Any
    toxic_type: Any
    expression: Any
    target: Any
    platform: Any
    fine_grained_label: int | None


class TextRecord(TypedDict):
    """An unlabelled text (``cold_train``): the label is left out on purpose."""

    id: str
    text: str
    source: str
    split: str


class ChatMessage(TypedDict):
    role: str  # "user" | "assistant"
    content: str


class ChatRecord(TypedDict):
    """A stage-1 (COIG-CQIA) record: one user turn and the assistant's reply."""

    id: str
    messages: list[ChatMessage]
    subset: str
    task_type: Any
    domain: Any


def _check(name: str) -> None:
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {list(SPLITS)}")


def split_dir(out_dir: str | Path) -> Path:
    """The folder of the split files under ``data.out_dir``."""
    return Path(out_dir) / SPLIT_DIR


def split_path(out_dir: str | Path, name: SplitName) -> Path:
    """``<out_dir>/splits/<name>.jsonl`` (``name`` must be one of :data:`SPLITS`)."""
    _check(name)
    return split_dir(out_dir) / f"{name}.jsonl"


def write_split(out_dir: str | Path, name: SplitName, records: Iterable[Mapping[str, Any]]) -> str:
    """Write one split file (creating the folder); return the SHA-256 of its bytes."""
    path = split_path(out_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            line = json.dumps(r, ensure_ascii=False) + "\n"
            f.write(line)
            h.update(line.encode("utf-8"))
    return h.hexdigest()


@overload
def load_split(out_dir: str | Path, name: Literal["stage1"]) -> list[ChatRecord]: ...
@overload
def load_split(out_dir: str | Path, name: LabelledSplit) -> list[LabelledRecord]: ...
@overload
def load_split(out_dir: str | Path, name: Literal["cold_train"]) -> list[TextRecord]: ...
@overload
def load_split(out_dir: str | Path, name: str) -> list[dict[str, Any]]: ...


def load_split(out_dir, name):
    """Read one split written by :func:`write_split` (``name`` in :data:`SPLITS`)."""
    p = split_path(out_dir, name)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run `chintox split` (or `dvc repro split`) first")
    with open(p, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


__all__ = ["HELD_OUT_SPLITS", "SPLITS", "SPLIT_DIR", "ChatRecord", "LabelledRecord", "SplitName", "TextRecord", "load_split", "split_dir",
           "split_path", "write_split"]
