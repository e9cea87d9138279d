"""The judgement log: one row per judged text, behind a SQLAlchemy URL (``serve.log_url``).

SQLite by default (``sqlite:///serving/predictions.db``, WAL mode), PostgreSQL when given
(``postgresql+psycopg://user@host/db``). Each row: the prediction id the API returned, the request id,
the time, the text's sha256 (the text itself only with ``serve.log_texts: true``), score, label,
threshold, model version, backend, whether the text was truncated, and the request's latency.
Rejected requests are never logged. Rows are written by one background thread in batches, so the
request path never waits on the database; :meth:`PredictionLog.flush` waits for what was queued.
The feedback loop reads this table.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TABLE = "judgements"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _table(metadata: Any) -> Any:
    from sqlalchemy import Boolean, Column, Float, Index, Integer, String, Table, Text

    return Table(
        TABLE, metadata,
        Column("id", String(64), primary_key=True),          # prediction id (returned to the client)
        Column("request_id", String(64), nullable=False),
        Column("created_at", Float, nullable=False),         # unix seconds
        Column("text_sha256", String(64), nullable=False),
        Column("text", Text, nullable=True),                 # only with serve.log_texts
        Column("score", Float, nullable=False),
        Column("label", Integer, nullable=False),
        Column("threshold", Float, nullable=False),
        Column("model_version", String(32), nullable=False),
        Column("backend", String(16), nullable=False),
        Column("truncated", Boolean, nullable=False),
        Column("latency_ms", Float, nullable=False),
        Index("ix_judgements_created_at", "created_at"),
        Index("ix_judgements_text_sha256", "text_sha256"),
    )


def _engine(url: str) -> Any:
    from sqlalchemy import create_engine, event

    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    eng = create_engine(url, pool_pre_ping=True)
    if eng.dialect.name == "sqlite":
        @event.listens_for(eng, "connect")
        def _wal(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()
    return eng


class PredictionLog:
    def __init__(self, url: str, log_texts: bool = False):
        from sqlalchemy import MetaData

        self.url = url
        self.log_texts = bool(log_texts)
        self.engine = _engine(url)
        md = MetaData()
        self.table = _table(md)
        md.create_all(self.engine)
        self._q: queue.Queue[list[dict[str, Any]] | None] = queue.Queue()
        self.written = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._writer, name="prediction-log", daemon=True)
        self._thread.start()

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows (keys: the table's columns, with ``text``; it is dropped unless ``log_texts``)."""
        if not self.log_texts:
            rows = [{**r, "text": None} for r in rows]
        self._q.put(rows)

    def _writer(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                self._q.task_done()
                return
            batch = list(item)
            n_items = 1
            while len(batch) < 2000:  # whatever else is queued goes in the same transaction
                try:
                    more = self._q.get_nowait()
                except queue.Empty:
                    break
                n_items += 1
                if more is None:
                    self._q.put(None)  # handled on the next turn
                    self._q.task_done()
                    n_items -= 1
                    break
                batch.extend(more)
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.table.insert(), batch)
                self.written += len(batch)
            except Exception as e:  # noqa: BLE001 - the log must not take the service down
                self.failed += len(batch)
                log.error("prediction log %s: %d rows not written: %s", self.url, len(batch), e)
            finally:
                for _ in range(n_items):
                    self._q.task_done()

    def flush(self) -> None:
        self._q.join()

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)
        self.engine.dispose()

    def count(self) -> int:
        from sqlalchemy import func, select

        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.table)).scalar_one())


def _sqlite_missing(url: str) -> bool:
    """A file-backed SQLite URL whose file does not exist (reading must not create it)."""
    if not url.startswith("sqlite:///") or url.startswith("sqlite:///:memory:"):
        return False
    return not Path(url.removeprefix("sqlite:///")).expanduser().is_file()


def read_judgements(url: str, *, ids: list[str] | None = None, since: float | None = None,
                    texts_only: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of the judgement log as dicts (the table's columns), oldest first.

    ``ids``: only these prediction ids; ``since``: only rows with ``created_at >= since`` (unix
    seconds); ``texts_only``: only rows that kept their text; ``limit``: at most this many rows. A log
    that does not exist yet (no SQLite file, no table) reads as empty and is not created."""
    from sqlalchemy import MetaData, inspect, select

    if _sqlite_missing(url) or (ids is not None and not ids):
        return []
    eng = _engine(url)
    try:
        if not inspect(eng).has_table(TABLE):
            return []
        t = _table(MetaData())
        q = select(t).order_by(t.c.created_at, t.c.id)
        if since is not None:
            q = q.where(t.c.created_at >= float(since))
        if texts_only:
            q = q.where(t.c.text.is_not(None))
        rows: list[dict[str, Any]] = []
        with eng.connect() as conn:
            if ids is None:
                rows = [dict(r._mapping) for r in conn.execute(q.limit(limit) if limit else q)]
            else:
                uniq = sorted(set(ids))
                for i in range(0, len(uniq), 500):  # stay under the databases' bound-parameter limits
                    rows += [dict(r._mapping) for r in conn.execute(q.where(t.c.id.in_(uniq[i:i + 500])))]
                rows.sort(key=lambda r: (r["created_at"], r["id"]))
                rows = rows[:limit] if limit else rows
        return rows
    finally:
        eng.dispose()
