"""The row rules of a feedback import and the conflict rule of the feedback sets (pure: no file I/O).

**Row rules.** Every data row of an imported file is either accepted (a correction) or quarantined
under exactly one rule: the first of :data:`RULES` that applies, in this order:

1. ``malformed_row``: the row cannot be read as a record (a JSON line that is not a JSON object, a
   CSV row with more fields than the header);
2. ``label_missing``: no label (absent, null, empty or blank);
3. ``label_invalid``: a label other than 0 or 1. Accepted spellings: the integers 0 and 1, integral
   floats (``1.0``) and strings of them, surrounding blanks ignored (``"1"``, ``" 0 "``, ``"1.0"``,
   what a spreadsheet exports). Refused: booleans, words (``"toxic"``, ``"yes"``), any other number;
4. ``text_missing``: neither a text nor a prediction id (an empty cell counts as absent), or a text
   that is not a string;
5. ``prediction_unknown``: a prediction id the judgement log does not hold;
6. ``prediction_without_text``: a prediction id whose judgement was logged without its text
   (``serve.log_texts: false``) and a row that gives no text either;
7. ``prediction_text_mismatch``: the row gives a text and a prediction id, and they disagree: the
   normalised texts differ (log with texts), or the text's sha256 is not the logged one (log without);
8. ``text_empty``: the text is blank (whitespace only);
9. ``text_too_long``: more than ``data.max_text_chars`` characters after stripping;
10. ``leakage``: its normalised text is a text of an evaluation split (``feedback.leakage_sets``);
11. ``duplicate``: the same normalised text with the same label, from the same moderator, as that
    moderator's latest accepted correction of the text (in the store, or earlier in this file; rows
    without a moderator count as one anonymous moderator). So a file imported under a new name
    adds nothing, while a second moderator agreeing is a vote (``majority``), and a moderator who
    re-labels a text back (1, then 0, then 1) is heard: the last correction is new information.

An accepted row's text is the row's text, stripped (the logged text when the row names only a
prediction id); a resolved prediction id also gives ``model_version`` and ``predicted_label``.

**Conflict rule** (``feedback.conflicts``), over all corrections of one normalised text, in store
order (import order, then row order): ``latest``: the last correction's label; ``majority``: the label
most corrections give, a tie going to the latest of the tied labels; ``drop``: a text whose corrections
disagree is left out of the feedback sets.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chintox.feedback import text_key
from chintox.textnorm import normalise

RULES: tuple[str, ...] = (
    "malformed_row", "label_missing", "label_invalid", "text_missing", "prediction_unknown",
    "prediction_without_text", "prediction_text_mismatch", "text_empty", "text_too_long", "leakage",
    "duplicate",
)
CONFLICT_RULES = ("latest", "majority", "drop")


@dataclass(frozen=True)
class RawRow:
    """One data row as read: ``values`` (column -> value), or ``None`` with ``problem`` when the row
    could not be read as a record (then ``raw`` holds what was there)."""

    row: int                                   # 1-based data row (a CSV header is row 0)
    values: Mapping[str, Any] | None
    problem: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The outcome of one row: ``rule`` is None for an accepted row (then the fields are filled)."""

    row: int
    rule: str | None
    message: str
    raw: dict[str, Any]
    text: str | None = None
    label: int | None = None
    text_key: str | None = None
    prediction_id: str | None = None
    model_version: str | None = None
    predicted_label: int | None = None
    note: str | None = None
    moderator: str | None = None


def blank(v: Any) -> bool:
    """Absent: None, NaN, or a string of blanks."""
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def parse_label(v: Any) -> int | None:
    """0 or 1 from the accepted spellings (see the module docstring); None for anything else."""
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        s = v.strip()
        try:
            v = int(s) if s.lstrip("+-").isdigit() else float(s)
        except ValueError:
            return None
    if isinstance(v, int):
        return v if v in (0, 1) else None
    if isinstance(v, float) and v in (0.0, 1.0):
        return int(v)
    return None


def raw_strings(values: Mapping[str, Any]) -> dict[str, Any]:
    """A row for the quarantine file: every value as a string (None stays None)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = "" if k is None else str(k)
        if v is None or isinstance(v, str):
            out[key] = v
        elif isinstance(v, list):  # the overflow fields of a CSV row
            out[key] = ",".join("" if x is None else str(x) for x in v)
        else:
            out[key] = str(v)
    return out


def _opt_str(v: Any) -> str | None:
    return None if blank(v) else str(v).strip()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RowChecker:
    """Applies the row rules to the rows of one file, in order (``duplicate`` looks at earlier rows).

    ``judgements``: the judgement log's rows for the prediction ids the file names, by id;
    ``leak_keys``: normalised texts of the evaluation splits; ``latest``: (text_key, moderator) -> the
    label of that moderator's latest accepted correction in the store (:func:`latest_labels`; updated
    as rows are accepted)."""

    def __init__(self, *, judgements: Mapping[str, Mapping[str, Any]], leak_keys: set[str],
                 latest: Mapping[tuple[str, str | None], int], max_text_chars: int,
                 moderator: str | None = None):
        self.judgements = judgements
        self.leak_keys = leak_keys
        self.latest = dict(latest)
        self.max_text_chars = max_text_chars
        self.moderator = _opt_str(moderator)

    def check(self, r: RawRow) -> Decision:
        if r.values is None:
            return Decision(r.row, "malformed_row", r.problem or "the row is not a record", raw_strings(r.raw))
        v = r.values
        raw = raw_strings(v)

        def refuse(rule: str, message: str) -> Decision:
            return Decision(r.row, rule, message, raw)

        if blank(v.get("label")):
            return refuse("label_missing", "no label: fill `label` with 1 (toxic) or 0 (not toxic)")
        label = parse_label(v.get("label"))
        if label is None:
            return refuse("label_invalid", f"label {v.get('label')!r} is not 0 or 1")
        text_v, pid = v.get("text"), _opt_str(v.get("prediction_id"))
        given = None if text_v is None or text_v == "" else text_v
        if given is not None and not isinstance(given, str):
            return refuse("text_missing", f"text is a {type(given).__name__}, not a string")
        if given is None and pid is None:
            return refuse("text_missing", "neither a text nor a prediction_id")
        model_version = predicted_label = None
        text = given
        if pid is not None:
            j = self.judgements.get(pid)
            if j is None:
                return refuse("prediction_unknown", f"prediction_id {pid!r} is not in the judgement log")
            model_version, predicted_label = j.get("model_version"), j.get("label")
            logged = j.get("text")
            if logged is None and given is None:
                return refuse("prediction_without_text",
                              f"prediction {pid!r} was logged without its text (serve.log_texts: false): "
                              "give the text in a `text` column")
            if given is not None:
                same = (normalise(given) == normalise(logged) if logged is not None
                        else j.get("text_sha256") in (_sha256(given), _sha256(given.strip())))
                if not same:
                    return refuse("prediction_text_mismatch",
                                  f"the text differs from the text judged under prediction_id {pid!r}")
            else:
                text = logged
        assert text is not None
        stripped = text.strip()
        if not stripped:
            return refuse("text_empty", "the text is blank")
        if len(stripped) > self.max_text_chars:
            return refuse("text_too_long",
                          f"text has {len(stripped)} chars after stripping > data.max_text_chars "
                          f"{self.max_text_chars}")
        norm = normalise(stripped)
        assert norm is not None
        if norm in self.leak_keys:
            return refuse("leakage", "the text is in an evaluation set (feedback.leakage_sets): a correction "
                                     "of it would leak into training")
        key = text_key(norm)
        moderator = _opt_str(v.get("moderator")) or self.moderator
        if self.latest.get((key, moderator)) == label:
            who = f"moderator {moderator!r}" if moderator else "a correction without a moderator"
            return refuse("duplicate", f"already accepted: label {label} for this text from {who}")
        self.latest[(key, moderator)] = label
        return Decision(
            r.row, None, "", raw, text=stripped, label=label, text_key=key, prediction_id=pid,
            model_version=None if model_version is None else str(model_version),
            predicted_label=None if predicted_label is None else int(predicted_label),
            note=_opt_str(v.get("note")), moderator=moderator)

    def check_all(self, rows: Iterable[RawRow]) -> list[Decision]:
        return [self.check(r) for r in rows]


def latest_labels(corrections: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str | None], int]:
    """(text_key, moderator) -> the label of that moderator's latest correction of it (store order)."""
    return {(c["text_key"], c.get("moderator")): int(c["label"]) for c in corrections}


def by_rule(decisions: Iterable[Decision]) -> dict[str, int]:
    """Quarantined rows per rule, in :data:`RULES` order, rules with none left out."""
    n = Counter(d.rule for d in decisions if d.rule is not None)
    return {r: n[r] for r in RULES if n[r]}


@dataclass(frozen=True)
class Resolved:
    """One corrected text after the conflict rule: ``label`` None when the rule dropped it."""

    text_key: str
    text: str
    label: int | None
    corrections: int
    conflict: bool                   # its corrections disagree


def resolve(corrections: Iterable[Mapping[str, Any]], rule: str) -> list[Resolved]:
    """Apply the conflict rule per text_key (corrections in store order); one entry per text, sorted
    by text_key. The text kept is that of the latest correction giving the winning label."""
    if rule not in CONFLICT_RULES:
        raise ValueError(f"unknown conflict rule {rule!r}; expected one of {list(CONFLICT_RULES)}")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for c in corrections:
        groups.setdefault(c["text_key"], []).append(c)
    out = []
    for key in sorted(groups):
        cs = groups[key]
        labels = [int(c["label"]) for c in cs]
        conflict = len(set(labels)) > 1
        if not conflict or rule == "latest":
            label: int | None = labels[-1]
        elif rule == "majority":
            counts = Counter(labels)
            top = max(counts.values())
            label = next(lab for lab in reversed(labels) if counts[lab] == top)
        else:
            label = None
        chosen = next((c for c in reversed(cs) if int(c["label"]) == label), cs[-1])
        out.append(Resolved(key, chosen["text"], label, len(cs), conflict))
    return out


__all__ = ["CONFLICT_RULES", "RULES", "Decision", "RawRow", "Resolved", "RowChecker", "blank", "by_rule",
           "latest_labels", "parse_label", "raw_strings", "resolve"]
