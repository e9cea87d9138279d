"""The detector card: ``detector.json`` of a detector folder, as one typed, frozen object.

The stage-2 step writes it (:meth:`DetectorCard.write`); every reader (the :class:`~chintox.detector.
Detector` and the pyfunc it serves, the scorers, evaluation, Table 1, registration) reads it with
:meth:`DetectorCard.read`, which refuses a missing file, a missing key, an unknown key or a value of
the wrong type, naming the file. A detector folder holds the card, ``prompt.txt`` and ``merged/`` (the
merged model with its tokenizer; ``adapter/`` too, for reference).

What it records:

- how to score: the answer words, the prompt's sha256, the decision threshold tuned on ToxiCN val
  (``threshold``) and the default one, the ``dtype`` the detector was trained in and is served in,
  and ``max_model_len``, the context window (prompt + text) it is evaluated and served with;
- what a GPU worker needs to serve it: the root base model (``base_model_id`` and
  ``base_model_revision``: a hub id and revision, or a built base and its content hash) and the
  adapter's shape (``lora_r``, ``lora_alpha``, ``lora_target_modules``, ``lora_modules_to_save``: a
  LoRA request needs a ``max_lora_rank`` of at least ``lora_r`` and no trainable full modules);
- how it was chosen: ``selected_epoch`` on ``select_metric``, val metrics at 0.5 and at the threshold;
- what it came from: the upstream model folder, ``stage1_enabled``, ``profile``, ``config_hash``, and
  ``lineage``: sha256 content hashes of what it was trained and validated on (:data:`LINEAGE_KEYS`).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CARD_FILE = "detector.json"

# lineage keys (values: sha256 hex, or "hub:<id>" for an upstream model that is not a local folder)
LINEAGE_TRAIN = "data.toxicn_train"       # the split file stage 2 trained on
LINEAGE_VAL = "data.toxicn_val"           # the split file that chose the epoch and the threshold
LINEAGE_STAGE1_DATA = "data.stage1"       # the stage-1 records, when stage 1 ran (from its train_info.json)
LINEAGE_UPSTREAM_DIR = "model.stage1"     # the upstream folder stage 2 was given (merged, or a pointer)
LINEAGE_UPSTREAM = "model.upstream"       # the model stage 2 actually loaded (the base behind a pointer)
LINEAGE_PRETRAIN_CORPUS = "data.pretrain_corpus"  # a pre-trained tiny base's corpus (its build_info.json)
# only when stage 2 trained on moderators' feedback (feedback.train): the feedback sets it was given
LINEAGE_FEEDBACK_TRAIN = "data.feedback_train"      # the feedback rows it trained on
LINEAGE_FEEDBACK_HOLDOUT = "data.feedback_holdout"  # the feedback rows held out from it (the gate's set)
LINEAGE_FEEDBACK_STORE = "data.feedback_store"      # the store version those sets were derived from
LINEAGE_KEYS = (LINEAGE_TRAIN, LINEAGE_VAL, LINEAGE_STAGE1_DATA, LINEAGE_UPSTREAM_DIR, LINEAGE_UPSTREAM,
                LINEAGE_PRETRAIN_CORPUS, LINEAGE_FEEDBACK_TRAIN, LINEAGE_FEEDBACK_HOLDOUT, LINEAGE_FEEDBACK_STORE)


class DetectorCardError(ValueError):
    """A ``detector.json`` that cannot be read as a detector card."""


class DetectorCardMissingError(DetectorCardError, FileNotFoundError):
    """A folder without ``detector.json``: not a trained detector."""


@dataclass(frozen=True)
class DetectorCard:
    base_model: str
    base_model_resolved: str
    stage1_enabled: bool
    profile: str
    answer_positive: str
    answer_negative: str
    prompt_sha256: str
    threshold: float
    threshold_default: float
    max_seq_len: int
    val_metrics: dict[str, float]
    val_metrics_at_threshold: dict[str, float]
    selected_epoch: int
    select_metric: str
    config_hash: str
    train_examples: int
    loss: str
    dtype: str
    max_model_len: int
    base_model_id: str
    base_model_revision: str
    lora_r: int
    lora_alpha: int
    lora_target_modules: list[str]
    lora_modules_to_save: list[str]
    lineage: dict[str, str]

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise DetectorCardError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.max_model_len < 1:
            raise DetectorCardError(f"max_model_len must be >= 1, got {self.max_model_len}")
        unknown = sorted(set(self.lineage) - set(LINEAGE_KEYS))
        if unknown:
            raise DetectorCardError(f"unknown lineage keys {unknown}; known: {list(LINEAGE_KEYS)}")

    # ------------------------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, folder: str | Path) -> Path:
        """Write ``<folder>/detector.json``; returns its path."""
        p = Path(folder) / CARD_FILE
        p.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        return p

    @classmethod
    def read(cls, folder: str | Path) -> DetectorCard:
        """The card of a detector folder; :class:`DetectorCardError` (naming the file) when there is
        none or it is not a valid card."""
        p = Path(folder) / CARD_FILE
        if not p.is_file():
            raise DetectorCardMissingError(
                f"{p.resolve()} not found: {Path(folder).resolve()} is not a detector folder "
                "(the stage2 step writes it)")
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DetectorCardError(f"{p.resolve()}: not valid JSON: {e}") from e
        return cls.from_dict(raw, source=str(p.resolve()))

    @classmethod
    def find(cls, folder: str | Path) -> DetectorCard | None:
        """The card when ``folder`` holds one, None for a plain model folder; a bad card is an error."""
        return cls.read(folder) if (Path(folder) / CARD_FILE).is_file() else None

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<dict>") -> DetectorCard:
        if not isinstance(raw, dict):
            raise DetectorCardError(f"{source}: a detector card is a JSON object, got {type(raw).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(names))
        missing = [n for n in names if n not in raw]
        if unknown or missing:
            parts = ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else [])
            raise DetectorCardError(f"{source}: {'; '.join(parts)} (a detector card has exactly {names})")
        values = {n: _check(hints[n], raw[n], n, source) for n in names}
        try:
            return cls(**values)
        except DetectorCardError as e:
            raise DetectorCardError(f"{source}: {e}") from None


def _check(tp: Any, value: Any, key: str, source: str) -> Any:
    """``value`` as type ``tp`` (int accepted for float), or a :class:`DetectorCardError`."""
    origin = typing.get_origin(tp)
    if origin is list:
        (it,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise DetectorCardError(f"{source}: {key} must be a list, got {value!r}")
        return [_check(it, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise DetectorCardError(f"{source}: {key} must be an object, got {value!r}")
        return {str(k): _check(vt, v, f"{key}.{k}", source) for k, v in value.items()}
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise DetectorCardError(f"{source}: {key} must be {tp.__name__}, got {value!r}")
    return float(value) if tp is float else value


__all__ = ["CARD_FILE", "LINEAGE_KEYS", "DetectorCard", "DetectorCardError", "DetectorCardMissingError"]
