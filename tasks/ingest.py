"""Ingestion: read the raw ToxiCN, COLD and COIG-CQIA files into one normalised record schema.

Every record has the common columns of :data:`COMMON_COLUMNS` plus its source's own category fields.
Structural defects (missing file, missing column, unreadable JSON/CSV, bytes that are not UTF-8) raise
:class:`DataError` naming the file, the row where known, and the rule. Row-level defects are *not*
handled here: every row read is returned, and validation decides what to keep or quarantine.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

COMMON_COLUMNS = ["id", "source", "split", "file", "row", "text", "label"]

TOXICN_FILES = {"train": "toxicn/train.json", "test": "toxicn/test.json"}
TOXICN_FIELDS = ["platform", "topic", "content", "toxic", "toxic_type", "expression", "target", "length"]
COLD_FILES = {"train": "cold/train.csv", "test": "cold/test.csv"}
COLD_FIELDS = {"train": ["split", "topic", "label", "TEXT"],
               "test": ["split", "topic", "label", "fine-grained-label", "TEXT"]}
CQIA_DIR = "coig-cqia"
CQIA_FIELDS = ["instruction", "input", "output", "task_type", "domain"]


class DataError(ValueError):
    """A raw file that cannot be read at all: names the file, the row (1-based) where known, the rule."""

    def __init__(self, file: str | Path, rule: str, message: str, row: int | None = None):
        self.file, self.rule, self.row = str(file), rule, row
        where = f"{file}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: [{rule}] {message}")


@dataclass(frozen=True)
class RawFile:
    source: str
    split: str
    path: Path
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(path, "file_exists", "file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        row = data[: e.start].count(b"\n") + 1
        raise DataError(path, "encoding", f"bytes at offset {e.start} are not UTF-8 ({e.reason})", row) from e


def _bad_label_to_none(value: Any) -> Any:
    """Keep labels as read (validation judges them); map blanks to None and numeric strings to int."""
    if value is None:
        return None
    if isinstance(value, str):
        v = value.strip()
        if v == "":
            return None
        try:
            return int(v)
        except ValueError:
            try:
                f = float(v)
                return int(f) if f.is_integer() else f
            except ValueError:
                return v
    return value


def read_toxicn(path: Path, split: str) -> pd.DataFrame:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, "json_parse", f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                        e.lineno) from e
    if not isinstance(data, list):
        raise DataError(path, "json_array", "top level must be a JSON array of objects")
    rows = []
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise DataError(path, "json_object", f"element is a {type(obj).__name__}, not an object", i)
        missing = [k for k in ("content", "toxic") if k not in obj]
        if missing:
            raise DataError(path, "required_column", f"missing field(s) {missing}", i)
        target = obj.get("target")
        rows.append({
            "text": obj.get("content"),
            "label": _bad_label_to_none(obj.get("toxic")),
            "topic": obj.get("topic"),
            "toxic_type": obj.get("toxic_type"),
            "expression": obj.get("expression"),
            "target": json.dumps(target) if target is not None else None,
            "platform": obj.get("platform"),
            "declared_length": obj.get("length"),
        })
    return _frame("toxicn", split, path, rows)


def read_cold(path: Path, split: str) -> pd.DataFrame:
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(path, "csv_header", "file is empty") from None
    except csv.Error as e:
        raise DataError(path, "csv_parse", str(e), 1) from e
    header = [h.lstrip("\ufeff").strip() for h in header]
    required = COLD_FIELDS.get(split, COLD_FIELDS["train"])
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(path, "required_column", f"missing column(s) {missing}; header is {header}", 1)
    idx = {c: header.index(c) for c in header}
    rows = []
    try:
        for line_no, rec in enumerate(reader, start=2):
            if len(rec) != len(header):
                raise DataError(path, "csv_shape", f"{len(rec)} cells, header has {len(header)}", line_no)
            get = lambda c: rec[idx[c]] if c in idx else None  # noqa: E731
            fg = get("fine-grained-label")
            rows.append({
                "text": get("TEXT"),
                "label": _bad_label_to_none(get("label")),
                "topic": get("topic"),
                "fine_grained_label": _bad_label_to_none(fg) if fg is not None else None,
                "original_split": get("split"),
                "original_index": get(header[0]) if header[0] not in required else None,
            })
    except csv.Error as e:
        raise DataError(path, "csv_parse", str(e), reader.line_num) from e
    return _frame("cold", split, path, rows)


def read_cqia(path: Path, subset: str) -> pd.DataFrame:
    text = _read_text(path)
    rows = []
    for i, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is valid inside JSON strings
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, "jsonl_parse", f"invalid JSON line: {e.msg}", i) from e
        if not isinstance(obj, dict):
            raise DataError(path, "json_object", "line is not a JSON object", i)
        missing = [k for k in ("instruction", "output") if k not in obj]
        if missing:
            raise DataError(path, "required_column", f"missing field(s) {missing}", i)
        task = obj.get("task_type") or {}
        instruction, inp = obj.get("instruction"), obj.get("input") or ""
        prompt = instruction if not inp else f"{instruction}\n{inp}" if isinstance(instruction, str) else None
        rows.append({
            "text": prompt,
            "label": None,
            "instruction": instruction,
            "input": inp,
            "output": obj.get("output"),
            "task_type": json.dumps(task, ensure_ascii=False) if not isinstance(task, str) else task,
            "domain": json.dumps(obj.get("domain"), ensure_ascii=False),
            "subset": subset,
            "line": i,
        })
    df = _frame("cqia", "train", path, rows)
    df["row"] = [r["line"] for r in rows] if rows else []
    df["id"] = [f"cqia-{subset}-{r['line']:06d}" for r in rows]
    return df.drop(columns=["line"])


def _frame(source: str, split: str, path: Path, rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    n = len(df)
    df.insert(0, "row", range(1, n + 1))
    df.insert(0, "file", str(path))
    df.insert(0, "split", split)
    df.insert(0, "source", source)
    df.insert(0, "id", [f"{source}-{split}-{i:06d}" for i in range(1, n + 1)])
    if "label" in df:
        df["label"] = df["label"].astype(object)
    return df


def discover(raw_dir: str | Path) -> list[RawFile]:
    """List the raw files this pipeline reads, with their content hashes."""
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise DataError(raw, "raw_dir", "raw-data folder not found (set data.raw_dir in params.yaml)")
    files: list[RawFile] = []
    for split, rel in TOXICN_FILES.items():
        files.append(_raw("toxicn", split, raw / rel))
    for split, rel in COLD_FILES.items():
        files.append(_raw("cold", split, raw / rel))
    cqia = sorted((raw / CQIA_DIR).rglob("*.jsonl"))
    if not cqia:
        raise DataError(raw / CQIA_DIR, "file_exists", "no COIG-CQIA *.jsonl files found")
    files.extend(_raw("cqia", "train", p) for p in cqia)
    return files


def _raw(source: str, split: str, path: Path) -> RawFile:
    if not path.is_file():
        raise DataError(path, "file_exists", "file not found")
    return RawFile(source, split, path, sha256_file(path), path.stat().st_size)


def cqia_subset_name(path: Path, raw_dir: Path) -> str:
    rel = path.relative_to(Path(raw_dir) / CQIA_DIR).with_suffix("")
    return "/".join(rel.parts)


def ingest(raw_dir: str | Path) -> tuple[dict[str, pd.DataFrame], list[RawFile]]:
    """Read every raw file. Returns one frame per source (``toxicn``, ``cold``, ``cqia``) and the
    hashed file list for lineage."""
    raw_dir = Path(raw_dir)
    files = discover(raw_dir)
    frames: dict[str, list[pd.DataFrame]] = {"toxicn": [], "cold": [], "cqia": []}
    for f in files:
        if f.source == "toxicn":
            frames["toxicn"].append(read_toxicn(f.path, f.split))
        elif f.source == "cold":
            frames["cold"].append(read_cold(f.path, f.split))
        else:
            frames["cqia"].append(read_cqia(f.path, cqia_subset_name(f.path, raw_dir)))
    out = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame(columns=COMMON_COLUMNS)
           for k, v in frames.items()}
    return out, files
