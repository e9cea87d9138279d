"""Serve step: the registered champion (or a given version) behind the moderation API.

``run_serve(cfg)`` resolves ``models:/<registered_model>@champion`` (or ``model_uri``), downloads that
version's detector folder from the registry into ``serve.model_cache`` (checked against the
``detector_sha256`` the version was registered with), starts its engine (vLLM's OpenAI server, or the
hf scorer: ``serve.backend``) and the API on ``serve.host:serve.port`` (127.0.0.1 by default). With
``serve.follow`` an alias is re-read every ``serve.poll_s`` seconds and a promotion or rollback is
followed with no failed request (:mod:`chintox.serving.supervisor`). Nothing but the registry and the
detector card is needed: no checkout, no DVC workspace.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from chintox.config import Config
from chintox.registry import DetectorDownloadError, download_detector
from chintox.serving import ServingError
from tasks.detect import _MODELS_URI, champion_uri, resolve

log = logging.getLogger(__name__)


def fetch_version(cfg: Config, version: str) -> Path:
    """The detector folder of registered ``version``, downloaded once into ``serve.model_cache``
    (:func:`chintox.registry.download_detector`); a version that cannot be had is a :class:`ServingError`."""
    try:
        return download_detector(cfg, version, cfg.serve.model_cache)
    except DetectorDownloadError as e:
        raise ServingError(str(e)) from e


def build_app(cfg: Config, model_uri: str | None = None, backend: str | None = None) -> Any:
    """The moderation API (a FastAPI app; its lifespan starts and stops the engines)."""
    from chintox.serving.app import Limits, create_app
    from chintox.serving.engine import make_engine, pick_backend
    from chintox.serving.predlog import PredictionLog
    from chintox.serving.supervisor import Supervisor

    s = cfg.serve
    uri = model_uri or champion_uri(cfg)
    m = _MODELS_URI.match(uri)
    if not m:
        raise ServingError(f"{uri}: serve a registered model, models:/<name>@<alias> or models:/<name>/<version>")
    chosen = backend or s.backend

    def _resolve() -> str:
        return str(resolve(cfg, uri)[1])

    def _engine(version: str, folder: Path) -> Any:
        return make_engine(version, folder, s, pick_backend(chosen, folder, s.quantization),
                           kvcache_gb=cfg.evaluate.vllm_kvcache_gb, block_size=cfg.evaluate.vllm_block_size,
                           log_dir=Path(s.model_cache) / "logs")

    _resolve()  # NoChampionError now, before anything starts
    sup = Supervisor(_resolve, lambda v: fetch_version(cfg, v), _engine, follow=s.follow and bool(m.group("alias")),
                     poll_s=s.poll_s, startup_timeout_s=s.startup_timeout_s, drain_timeout_s=s.drain_timeout_s)
    limits = Limits(s.max_texts_per_request, s.max_text_chars, s.max_body_bytes)
    return create_app(sup, limits, PredictionLog(s.log_url, s.log_texts), batch_max_texts=s.batch_max_texts,
                      batch_wait_ms=s.batch_wait_ms)


def run_serve(cfg: Config, model_uri: str | None = None, host: str | None = None, port: int | None = None,
              backend: str | None = None) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM stop the engines too)."""
    import uvicorn

    from chintox.logs import setup_logging

    setup_logging()
    app = build_app(cfg, model_uri=model_uri, backend=backend)
    host, port = host or cfg.serve.host, int(port or cfg.serve.port)
    log.info("moderation API on http://%s:%d (POST /v1/moderate, /readyz, /metrics)", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
