"""The moderation API (FastAPI): ``POST /v1/moderate``, health, readiness, model info, Prometheus.

``POST /v1/moderate`` with ``{"texts": ["...", ...]}`` answers, in order, one
``{"id", "label", "score", "model_version", "truncated"}`` per text (``id``: the prediction id, also in
the judgement log; the request id is the ``X-Request-ID`` header). Bad requests get a 4xx with
``{"error": {"code", "reason", "message", "request_id"}}``, are counted, never logged as judgements,
and the service keeps serving:

===========================  ====  =============================================================
reason                       code  when
===========================  ====  =============================================================
``body_too_large``           413   the body is over ``serve.max_body_bytes``
``malformed_json``           400   the body is not JSON (or not UTF-8)
``not_an_object``            422   the JSON is not an object
``unknown_field``            422   a key other than ``texts``
``texts_missing``            422   no ``texts``
``texts_not_a_list``         422   ``texts`` is not a list
``texts_empty``              422   ``texts`` is an empty list
``too_many_texts``           413   more than ``serve.max_texts_per_request``
``text_not_a_string``        422   ``texts[i]`` is not a string
``text_empty``               422   ``texts[i]`` is empty or whitespace only
``text_too_long``            413   ``texts[i]`` has more than ``serve.max_text_chars`` characters
``not_ready``                503   no version is loaded yet
``engine_error``             503   the scoring engine failed (the message says why)
===========================  ====  =============================================================

A text within ``max_text_chars`` but longer than the detector's window is cut by the card's
truncation policy and answered with ``"truncated": true``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from chintox.serving.batcher import MicroBatcher
from chintox.serving.predlog import PredictionLog, text_sha256
from chintox.serving.supervisor import Supervisor

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Limits:
    max_texts_per_request: int
    max_text_chars: int
    max_body_bytes: int


class BadRequest(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("chintox_requests", "Moderation requests, by HTTP status and reason",
                                ["status", "reason"], registry=r)
        self.texts = Counter("chintox_texts", "Judged texts, by label and model version",
                             ["label", "model_version"], registry=r)
        self.truncated = Counter("chintox_truncated_texts", "Judged texts cut to the detector's window",
                                 registry=r)
        self.latency = Histogram("chintox_request_latency_seconds", "Latency of answered moderation requests",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("chintox_batch_texts", "Texts per scoring call",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        self.model = Gauge("chintox_model_info", "1 for the version that serves now",
                           ["model_version", "backend"], registry=r)
        self.swaps = Counter("chintox_model_swaps", "Times a new version took the traffic", registry=r)

    def swapped(self, old: str | None, new: str, backend: str) -> None:
        if old is not None:
            self.model.labels(model_version=old, backend=backend).set(0)
            self.swaps.inc()
        self.model.labels(model_version=new, backend=backend).set(1)


def parse_texts(body: bytes, limits: Limits) -> list[str]:
    """The texts of a moderation request, or :class:`BadRequest` naming the rule (and the index)."""
    if len(body) > limits.max_body_bytes:
        raise BadRequest(413, "body_too_large", f"the body is {len(body)} bytes; the limit is "
                                                f"{limits.max_body_bytes} (serve.max_body_bytes)")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(400, "malformed_json", f"the body is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise BadRequest(422, "not_an_object", 'the body must be a JSON object {"texts": [...]}')
    extra = sorted(set(data) - {"texts"})
    if extra:
        raise BadRequest(422, "unknown_field", f"unknown field {extra[0]!r}; the body has only \"texts\"")
    if "texts" not in data:
        raise BadRequest(422, "texts_missing", 'the body has no "texts" (a list of strings)')
    texts = data["texts"]
    if not isinstance(texts, list):
        raise BadRequest(422, "texts_not_a_list", f'"texts" must be a list of strings, not {type(texts).__name__}')
    if not texts:
        raise BadRequest(422, "texts_empty", '"texts" is an empty list')
    if len(texts) > limits.max_texts_per_request:
        raise BadRequest(413, "too_many_texts", f"{len(texts)} texts; the limit is "
                                                f"{limits.max_texts_per_request} per request "
                                                "(serve.max_texts_per_request)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise BadRequest(422, "text_not_a_string", f"texts[{i}] is a {type(t).__name__}, not a string")
        if not t.strip():
            raise BadRequest(422, "text_empty", f"texts[{i}] is empty or whitespace only")
        if len(t) > limits.max_text_chars:
            raise BadRequest(413, "text_too_long", f"texts[{i}] has {len(t)} characters; the limit is "
                                                   f"{limits.max_text_chars} (serve.max_text_chars)")
    return texts


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, reading at most ``limit + 1`` bytes (a huge body is refused without being held)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, "body_too_large", f"the body is {declared} bytes; the limit is {limit} "
                                                "(serve.max_body_bytes)")
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise BadRequest(413, "body_too_large", f"the body is over {limit} bytes (serve.max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(supervisor: Supervisor, limits: Limits, predlog: PredictionLog | None, *,
               batch_max_texts: int = 128, batch_wait_ms: float = 5.0, max_concurrent_batches: int = 2) -> FastAPI:
    """The API over a :class:`Supervisor` (started and stopped with the app)."""
    metrics = Metrics()
    state: dict[str, Any] = {}

    supervisor.listeners.append(
        lambda swap: metrics.swapped(swap["from"], swap["to"], supervisor.live.backend if supervisor.live else "?"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = MicroBatcher(supervisor.current, max_texts=batch_max_texts, wait_ms=batch_wait_ms,
                               max_concurrent=max_concurrent_batches, on_batch=metrics.batch.observe)
        batcher.start()
        state["batcher"] = batcher
        await supervisor.start()
        try:
            yield
        finally:
            await batcher.stop()
            await supervisor.stop()
            if predlog is not None:
                predlog.close()

    app = FastAPI(title="chintox moderation API", lifespan=lifespan)
    app.state.supervisor = supervisor
    app.state.metrics = metrics
    app.state.predlog = predlog

    def _error(e: BadRequest, request_id: str) -> JSONResponse:
        metrics.requests.labels(status=str(e.code), reason=e.reason).inc()
        return JSONResponse({"error": {"code": e.code, "reason": e.reason, "message": e.message,
                                       "request_id": request_id}},
                            status_code=e.code, headers={"X-Request-ID": request_id})

    @app.post("/v1/moderate")
    async def moderate(request: Request) -> Response:
        t0 = time.perf_counter()
        request_id = uuid.uuid4().hex
        try:
            texts = parse_texts(await _read_body(request, limits.max_body_bytes), limits)
            if supervisor.live is None:
                raise BadRequest(503, "not_ready", "no model version is loaded yet")
            try:
                engine, judged = await state["batcher"].submit(texts)
            except Exception as e:  # the engine's failure, as a 503 naming it
                log.error("request %s: scoring failed: %s", request_id, e)
                raise BadRequest(503, "engine_error", f"scoring failed: {e}") from e
        except BadRequest as e:
            return _error(e, request_id)
        latency = time.perf_counter() - t0
        version = engine.version
        results, rows, now = [], [], time.time()
        for i, (text, j) in enumerate(zip(texts, judged, strict=True)):
            pid = f"{request_id}-{i}"
            results.append({"id": pid, "label": j.label, "score": round(j.score, 6),
                            "model_version": version, "truncated": j.truncated})
            rows.append({"id": pid, "request_id": request_id, "created_at": now, "text_sha256": text_sha256(text),
                         "text": text, "score": j.score, "label": j.label, "threshold": engine.threshold,
                         "model_version": version, "backend": engine.backend, "truncated": j.truncated,
                         "latency_ms": latency * 1000.0})
            metrics.texts.labels(label=str(j.label), model_version=version).inc()
            if j.truncated:
                metrics.truncated.inc()
        if predlog is not None:
            predlog.record(rows)
        metrics.requests.labels(status="200", reason="ok").inc()
        metrics.latency.observe(latency)
        return Response(orjson.dumps(results), media_type="application/json", headers={"X-Request-ID": request_id})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        live = supervisor.live
        if live is None or not await live.healthy():
            return JSONResponse({"status": "not ready", "error": supervisor.last_error}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": live.version, "backend": live.backend})

    @app.get("/v1/model")
    async def model_info() -> Response:
        live = supervisor.live
        return JSONResponse({"model": live.describe() if live else None, "limits": limits.__dict__,
                             "swaps": supervisor.swaps, "last_error": supervisor.last_error,
                             "last_poll": supervisor.last_poll,
                             "follow": supervisor.follow})

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app

