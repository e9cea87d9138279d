"""The feedback steps: create the store, import moderators' corrections, build the feedback sets,
export the review queue.

- :func:`run_feedback_init` (DVC stage ``feedback_store``): the empty store where none exists.
- :func:`run_feedback_import` (``chintox feedback import``): one corrections file -> the store. File-level
  problems (missing file, not UTF-8, no ``label`` column, neither ``text`` nor ``prediction_id``) stop
  it before anything is written; each bad row is quarantined under one rule
  (:mod:`chintox.feedback.rules`, which documents the rules and their priority); then ``dvc commit``
  makes the store a new DVC version. A file imported before (same bytes) changes nothing.
- :func:`run_feedback_sets` (DVC stage ``feedback``): the store -> ``train.jsonl`` / ``holdout.jsonl``
  after the conflict rule and a fresh leakage check.
- :func:`run_feedback_export` (``chintox feedback export``): the review queue from the judgement log
  (:mod:`chintox.feedback.queue`), a file that imports as it is once ``label`` is filled.
- :func:`corrections_count`: accepted corrections in the store (the retrain flow's trigger).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chintox.config import Config
from chintox.feedback import (
    CORRECTIONS,
    HOLDOUT_FILE,
    IMPORTS,
    QUARANTINE,
    SOURCE,
    SOURCE_FILE,
    STORE_FILES,
    SUMMARY_FILE,
    TRAIN_FILE,
    CorrectionRecord,
    FeedbackError,
    FeedbackRow,
    ImportRecord,
    QuarantineRecord,
    feedback_part,
    read_jsonl,
    sets_path,
    store_path,
    write_jsonl,
)
from chintox.feedback import queue as review
from chintox.feedback.rules import RawRow, RowChecker, blank, by_rule, latest_labels, resolve
from chintox.logs import setup_logging
from chintox.provenance import file_sha256
from chintox.splits import load_split, split_path
from chintox.textnorm import normalise_many

log = logging.getLogger(__name__)

STORE_STAGE = "feedback_store"
LAST_IMPORT = "last_import.json"
DATA_DOCS = "data_docs"
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


def _store(cfg: Config) -> Path:
    return Path(cfg.feedback.store)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _dump(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8", newline="\n")


def store_sha256(store: str | Path) -> str:
    """Content hash of the store's three files (names included; a missing file counts as empty).
    Not of the folder: its Data Docs and ``last_import.json`` are reports, not corrections."""
    h = hashlib.sha256()
    for name in STORE_FILES:
        p = store_path(store, name)
        h.update(name.encode() + b"\0")
        if p.is_file():
            file_sha256(p, h)
        h.update(b"\0")
    return h.hexdigest()


def corrections_count(cfg: Config) -> int:
    """Accepted corrections in the store (0 when there is no store yet)."""
    p = store_path(_store(cfg), CORRECTIONS)
    if not p.is_file():
        return 0
    with open(p, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


# ------------------------------------------------------------------------------------------ init


def _init_store(store: Path) -> list[str]:
    store.mkdir(parents=True, exist_ok=True)
    created = []
    for name in STORE_FILES:
        p = store_path(store, name)
        if not p.exists():
            p.write_bytes(b"")
            created.append(name)
    return created


def run_feedback_init(cfg: Config) -> dict[str, Any]:
    """Create ``feedback.store`` and its three files, empty, where missing; never change what exists
    (the DVC out is ``persist: true``). Empty files: a fresh store hashes the same everywhere."""
    setup_logging()
    store = _store(cfg)
    created = _init_store(store)
    log.info("feedback store %s: created %s", store, created or "nothing (it exists)")
    return {"store": str(store), "created": created, "corrections": corrections_count(cfg)}


# ------------------------------------------------------------------------------------------ reading


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        in_line = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise FeedbackError(
            f"{path}: rule encoding: not UTF-8: line {line}, byte {in_line} of the line (byte offset "
            f"{e.start} of the file) is 0x{data[e.start]:02x}; save the file as UTF-8") from None
    return text.removeprefix("\ufeff")  # a spreadsheet's byte-order mark


def _read_csv(path: Path, text: str) -> tuple[list[str], list[RawRow]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise FeedbackError(f"{path}: rule label_column_missing: the file is empty (no header row)")
        header = [h.strip() for h in header]
        rows = []
        n = 0
        for fields in reader:
            if not fields:  # a blank line
                continue
            n += 1
            values: dict[str, Any] = {h: (fields[i] if i < len(fields) else None) for i, h in enumerate(header)}
            if len(fields) > len(header):
                raw = {**values, "extra_fields": fields[len(header):]}
                rows.append(RawRow(n, None, f"{len(fields)} fields, the header has {len(header)} "
                                            "(a comma in an unquoted text?)", raw))
            else:
                rows.append(RawRow(n, values))
    except csv.Error as e:
        raise FeedbackError(f"{path}: rule malformed_file: CSV line {reader.line_num}: {e}") from None
    return header, rows


def _read_jsonl(path: Path, text: str) -> tuple[list[str], list[RawRow]]:
    columns: dict[str, None] = {}
    rows = []
    lines = text.split("\n")
    for i, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            rows.append(RawRow(i, None, f"line {i} is not JSON: {e.msg}", {"line": line}))
            continue
        if not isinstance(obj, dict):
            rows.append(RawRow(i, None, f"line {i} is a JSON {type(obj).__name__}, not an object",
                               {"line": line}))
            continue
        columns.update(dict.fromkeys(obj))
        rows.append(RawRow(i, obj))
    if rows and not columns:
        raise FeedbackError(f"{path}: rule malformed_file: no line is a JSON object; expected JSON lines, "
                            "one object per line")
    return list(columns), rows


def read_feedback_file(path: str | Path) -> tuple[bytes, list[str], list[RawRow]]:
    """The file's bytes, its columns and its data rows; FeedbackError for a file that cannot be used."""
    p = Path(path)
    if not p.is_file():
        raise FeedbackError(f"{p}: rule file_missing: no such file")
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise FeedbackError(f"{p}: rule format: expected a .csv (header row) or .jsonl/.json (JSON lines) file")
    data = p.read_bytes()
    text = _decode(p, data)
    columns, rows = (_read_csv if fmt == "csv" else _read_jsonl)(p, text)
    if rows or fmt == "csv":
        if "label" not in columns:
            raise FeedbackError(f"{p}: rule label_column_missing: no `label` column (columns: {columns})")
        if "text" not in columns and "prediction_id" not in columns:
            raise FeedbackError(f"{p}: rule text_column_missing: neither a `text` nor a `prediction_id` "
                                f"column (columns: {columns})")
    return data, columns, rows


def leak_keys(cfg: Config) -> set[str]:
    """Normalised texts of the evaluation splits (``feedback.leakage_sets``)."""
    texts: list[str] = []
    for name in cfg.feedback.leakage_sets:
        try:
            texts += [r["text"] for r in load_split(cfg.data.out_dir, name)]
        except FileNotFoundError:
            raise FeedbackError(f"the split {name} ({split_path(cfg.data.out_dir, name)}) is missing; the "
                                "leakage check needs it: run `dvc repro split` first") from None
        except ValueError as e:
            raise FeedbackError(f"feedback.leakage_sets: {e}") from None
    return {n for n in normalise_many(texts) if n}


def _read_log(url: str, **kw: Any) -> list[dict[str, Any]]:
    """:func:`chintox.serving.predlog.read_judgements`, any database error a FeedbackError naming the log."""
    from chintox.serving.predlog import read_judgements

    try:
        return read_judgements(url, **kw)
    except Exception as e:  # whatever the database raised
        raise FeedbackError(f"cannot read the judgement log {url}: {e}") from e


# ------------------------------------------------------------------------------------------ DVC


def _dvc_root(store: Path) -> Path | None:
    here = store.resolve()
    return next((d for d in (here, *here.parents) if (d / "dvc.yaml").is_file()), None)


def _lock_version(root: Path, store: Path) -> str | None:
    import yaml

    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return None
    stage = (yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}).get("stages", {}).get(STORE_STAGE)
    outs = (stage or {}).get("outs", [])
    for o in outs:
        if (root / o["path"]).resolve() == store.resolve():
            return o.get("md5")
    if outs:
        raise FeedbackError(f"stage {STORE_STAGE} in {lock_file} records {[o['path'] for o in outs]}, not the "
                            f"store {store}: feedback.store differs from the store DVC tracks")
    return None


def dvc_commit_store(store: Path) -> tuple[str | None, str | None]:
    """``dvc commit -f feedback_store`` in the DVC project holding the store; (its new md5, a note)."""
    root = _dvc_root(store)
    if root is None:
        return None, f"no dvc.yaml above {store}: the store was not recorded as a DVC version"
    beside = Path(sys.executable).parent / "dvc"
    exe = str(beside) if beside.is_file() else shutil.which("dvc")
    if exe is None:
        raise FeedbackError("dvc is not installed: the import is in the store; record it with "
                            f"`dvc commit -f {STORE_STAGE}` in {root}")
    cmd = [exe, "commit", "-f", STORE_STAGE]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if p.returncode:
        tail = (p.stdout + p.stderr).strip()[-2000:]
        raise FeedbackError(f"`dvc commit -f {STORE_STAGE}` in {root} failed (exit {p.returncode}); the import "
                            f"is in the store, run the command again once fixed:\n{tail}")
    return _lock_version(root, store), None


# ------------------------------------------------------------------------------------------ import


def _earlier_import(cfg: Config, store: Path, rec: dict[str, Any], file: Path) -> dict[str, Any]:
    root = _dvc_root(store)
    log.info("%s was imported before (%s, import %s): nothing to do", file, rec["imported_at"],
             rec["import_id"][:12])
    return {**rec, "file_given": str(file), "already_imported": True, "corrections_total": corrections_count(cfg),
            "store_version": _lock_version(root, store) if root else None,
            "quarantine_file": str(store_path(store, QUARANTINE)), "data_docs": None, "great_expectations": None}


def run_feedback_import(cfg: Config, file: str | Path, *, moderator: str | None = None, dvc_commit: bool = True,
                        great_expectations: bool | None = None) -> dict[str, Any]:
    """Validate one corrections file, add its accepted rows to the store and quarantine the rest (each
    with its rule), then record the store as a new DVC version. Returns the import's summary."""
    setup_logging()
    file = Path(file)
    store = _store(cfg)
    data, columns, rows = read_feedback_file(file)
    import_id = hashlib.sha256(data).hexdigest()
    earlier = next((r for r in read_jsonl(store_path(store, IMPORTS)) if r["import_id"] == import_id), None)
    if earlier is not None:
        return _earlier_import(cfg, store, earlier, file)
    leaks = leak_keys(cfg)
    pids = sorted({str(r.values["prediction_id"]).strip() for r in rows
                   if r.values is not None and not blank(r.values.get("prediction_id"))})
    judgements = {j["id"]: j for j in _read_log(cfg.serve.log_url, ids=pids)} if pids else {}
    checker = RowChecker(judgements=judgements, leak_keys=leaks,
                         latest=latest_labels(read_jsonl(store_path(store, CORRECTIONS))),
                         max_text_chars=cfg.data.max_text_chars, moderator=moderator)
    decisions = checker.check_all(rows)
    counts = by_rule(decisions)
    accepted = [d for d in decisions if d.rule is None]
    quarantined = len(decisions) - len(accepted)
    if len(accepted) + quarantined != len(rows) or sum(counts.values()) != quarantined:
        raise FeedbackError(f"{file}: counts do not add up: {len(rows)} rows read, {len(accepted)} accepted, "
                            f"{quarantined} quarantined ({counts}); this is a bug")

    gx_result = None
    use_gx = cfg.feedback.great_expectations if great_expectations is None else great_expectations
    if use_gx:
        from chintox.feedback.gx import run_feedback_gx

        gx_result = run_feedback_gx(decisions, store / DATA_DOCS, "import")

    _init_store(store)
    now = _now()
    corrections: list[CorrectionRecord] = [{
        "id": f"fb-{import_id[:12]}-{d.row}", "text": d.text or "", "label": int(d.label or 0),
        "text_key": d.text_key or "", "prediction_id": d.prediction_id, "model_version": d.model_version,
        "predicted_label": d.predicted_label, "note": d.note, "moderator": d.moderator, "import_id": import_id,
        "file": file.name, "row": d.row, "imported_at": now} for d in accepted]
    refused: list[QuarantineRecord] = [{
        "import_id": import_id, "file": file.name, "row": d.row, "rule": d.rule or "", "message": d.message,
        "raw": d.raw} for d in decisions if d.rule is not None]
    record: ImportRecord = {"import_id": import_id, "file": file.name, "imported_at": now, "rows_read": len(rows),
                            "accepted": len(accepted), "quarantined": quarantined, "by_rule": counts}
    write_jsonl(store_path(store, CORRECTIONS), corrections, append=True)
    write_jsonl(store_path(store, QUARANTINE), refused, append=True)
    write_jsonl(store_path(store, IMPORTS), [record], append=True)
    written = Counter(r["import_id"] for r in read_jsonl(store_path(store, QUARANTINE)))[import_id]
    if written != quarantined:
        raise FeedbackError(f"{store_path(store, QUARANTINE)} holds {written} rows of import {import_id[:12]}, "
                            f"expected {quarantined}; this is a bug")

    summary: dict[str, Any] = {
        **record, "file": str(file), "already_imported": False, "columns": columns,
        "corrections_total": corrections_count(cfg), "quarantine_file": str(store_path(store, QUARANTINE)),
        "data_docs": gx_result["docs"] if gx_result else None, "great_expectations": gx_result,
        "store_version": None, "note": None,
    }
    _dump(store / LAST_IMPORT, summary)
    log.info("%s: %d rows read, %d accepted, %d quarantined %s; %d corrections in the store", file, len(rows),
             len(accepted), quarantined, counts, summary["corrections_total"])
    if dvc_commit:
        summary["store_version"], summary["note"] = dvc_commit_store(store)
        if summary["note"]:
            log.warning(summary["note"])
        else:
            log.info("feedback store recorded as DVC version %s", summary["store_version"])
    return summary


# ------------------------------------------------------------------------------------------ sets


def _balance(rows: list[FeedbackRow]) -> dict[str, Any]:
    toxic = sum(r["label"] for r in rows)
    return {"rows": len(rows), "toxic": toxic, "non_toxic": len(rows) - toxic,
            "toxic_share": round(toxic / len(rows), 4) if rows else None}


def run_feedback_sets(cfg: Config) -> dict[str, Any]:
    """The store's corrections -> ``<data.out_dir>/feedback/{train,holdout}.jsonl`` (empty both unless
    ``feedback.train``), ``source.json`` and ``feedback_summary.json``. Returns the summary."""
    setup_logging()
    fc = cfg.feedback
    store = _store(cfg)
    if not store.is_dir():
        raise FeedbackError(f"no feedback store at {store}: run `dvc repro feedback_store` (or `dvc pull`) first")
    corrections = read_jsonl(store_path(store, CORRECTIONS))
    n_imports = len(read_jsonl(store_path(store, IMPORTS)))
    leaks = leak_keys(cfg)
    resolved = resolve(corrections, fc.conflicts)
    leaked = {r.text_key for r, n in zip(resolved, normalise_many([r.text for r in resolved])) if n in leaks}
    parts: dict[str, list[FeedbackRow]] = {"train": [], "holdout": []}
    dropped = 0
    for r in resolved:
        if r.text_key in leaked:
            continue
        if r.label is None:
            dropped += 1
            continue
        part = feedback_part(r.text_key, fc.holdout_share)
        parts[part].append({"id": f"fb-{r.text_key[:16]}", "text": r.text, "label": r.label, "source": SOURCE,
                            "split": part, "text_key": r.text_key, "corrections": r.corrections})
    n_conflicts = sum(r.conflict for r in resolved if r.text_key not in leaked)
    if len(parts["train"]) + len(parts["holdout"]) + dropped + len(leaked) != len(resolved):
        raise FeedbackError("feedback sets: counts do not add up; this is a bug")

    out = Path(cfg.data.out_dir)
    write_jsonl(sets_path(out, TRAIN_FILE), parts["train"] if fc.train else [])
    write_jsonl(sets_path(out, HOLDOUT_FILE), parts["holdout"] if fc.train else [])
    # unused feedback must leave stage 2's input unchanged: no store hash in source.json then
    source = ({"store_sha256": store_sha256(store), "corrections": len(corrections), "imports": n_imports,
               "used": True} if fc.train else {"used": False})
    _dump(sets_path(out, SOURCE_FILE), source)
    summary = {
        "train_enabled": fc.train, "conflict_rule": fc.conflicts, "corrections": len(corrections),
        "imports": n_imports, "texts": len(resolved),
        "conflicts": {"found": n_conflicts, "resolved": n_conflicts - dropped, "dropped": dropped},
        "leakage_dropped": len(leaked),
        "train": _balance(parts["train"]), "holdout": _balance(parts["holdout"]),
        "rows_written": {"train": len(parts["train"]) if fc.train else 0,
                         "holdout": len(parts["holdout"]) if fc.train else 0},
    }
    _dump(out / SUMMARY_FILE, summary)
    log.info("feedback sets: %d corrections, %d texts -> train %d, holdout %d, %d dropped (conflicts, rule %s), "
             "%d leaked%s", len(corrections), len(resolved), len(parts["train"]), len(parts["holdout"]), dropped,
             fc.conflicts, len(leaked), "" if fc.train else " (feedback.train is off: both sets written empty)")
    return summary


# ------------------------------------------------------------------------------------------ export


def _since(v: Any) -> float | None:
    if v is None or isinstance(v, int | float):
        return v
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            v = datetime.fromisoformat(v)
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp()
    raise FeedbackError(f"since: expected unix seconds, an ISO 8601 time or a datetime, got {v!r}")


def _write_queue(out: Path, rows: list[dict[str, Any]]) -> None:
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise FeedbackError(f"{out}: the review queue is written as .csv or .jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        write_jsonl(out, rows)
        return
    with open(out, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(review.COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def run_feedback_export(cfg: Config, out: str | Path, *, size: int | None = None, random_share: float | None = None,
                        seed: int | None = None, since: Any = None) -> dict[str, Any]:
    """The review queue: judgements with their text, one per text, not yet corrected, not in an
    evaluation split; the most uncertain plus a random sample. ``label`` is left for the moderator."""
    setup_logging()
    fc = cfg.feedback
    out = Path(out)
    size = fc.review_size if size is None else int(size)
    random_share = fc.review_random_share if random_share is None else float(random_share)
    seed = cfg.data.seed if seed is None else int(seed)
    if size < 1 or not 0.0 <= random_share <= 1.0:
        raise FeedbackError(f"size must be >= 1 and random_share in [0, 1], got {size} and {random_share}")
    start = _since(since)
    url = cfg.serve.log_url
    judged = _read_log(url, since=start, texts_only=True)
    any_rows = bool(judged) or bool(_read_log(url, since=start, limit=1))
    if any_rows and not judged:
        raise FeedbackError(f"the judgement log {url} holds judgements but none with its text: a review queue "
                            "needs the texts, set `serve.log_texts: true` for the server that judges them")
    corrected = {c["text_key"] for c in read_jsonl(store_path(_store(cfg), CORRECTIONS))}
    cands, skipped = review.candidates(judged, corrected=corrected, leak_keys=leak_keys(cfg),
                                       max_text_chars=cfg.data.max_text_chars)
    rows = review.select(cands, size, random_share, seed)
    _write_queue(out, rows)
    reasons = Counter(r["review_reason"] for r in rows)
    summary = {"file": str(out), "judgements_with_text": len(judged), "candidates": len(cands), "skipped": skipped,
               "rows": len(rows), "uncertain": reasons["uncertain"], "random": reasons["random"], "seed": seed}
    if not any_rows:
        log.warning("the judgement log %s is empty: the review queue %s has no rows", url, out)
    log.info("review queue %s: %d rows (%d uncertain, %d random) of %d candidates; left out %s", out, len(rows),
             reasons["uncertain"], reasons["random"], len(cands), skipped)
    return summary


__all__ = ["corrections_count", "dvc_commit_store", "leak_keys", "read_feedback_file", "run_feedback_export",
           "run_feedback_import", "run_feedback_init", "run_feedback_sets", "store_sha256"]
