"""Serving a registered detector: the moderation API in front of a scoring engine.

    client ──POST /v1/moderate──► api (FastAPI) ──► batcher ──► engine of the live version
                                     │                              ├─ vllm: vLLM's OpenAI server,
                                     │                              │        POST /generative_scoring
                                     └─► prediction log (SQLAlchemy) └─ hf: the in-process HFScorer

- :mod:`~chintox.serving.engine`: one loaded version (``VLLMServerEngine`` | ``LocalEngine``): the
  card's prompt, answer words, threshold and truncation, applied the same way as ``chintox evaluate``.
- :mod:`~chintox.serving.batcher`: concurrent requests gathered into one scoring call, within a bounded
  wait (``serve.batch_wait_ms``, ``serve.batch_max_texts``).
- :mod:`~chintox.serving.supervisor`: follows the alias: a new version is started beside the live one,
  checked, then takes the traffic; the old one finishes its in-flight batches and stops.
- :mod:`~chintox.serving.app`: the HTTP API (validation with clear 4xx, health, readiness, Prometheus).
- :mod:`~chintox.serving.predlog`: one row per judged text, behind a SQLAlchemy URL.
- :mod:`~chintox.serving.client`: the Python client (``chintox detect --server URL`` uses it).

The registry (which version an alias names, where its files are) is the caller's business
(``tasks/serve.py``): this package gets a ``resolve()`` and a ``fetch(version)`` and never imports MLflow.
"""

from __future__ import annotations


class ServingError(RuntimeError):
    """The serving stack cannot start or serve (a version that does not load, a port in use, ...)."""


__all__ = ["ServingError"]
