"""The Python client of a running ``chintox serve``.

    with ModerationClient("http://127.0.0.1:8090") as c:
        c.moderate(["你好"])  # [{"id", "label", "score", "model_version", "truncated"}]

``moderate_all`` sends any number of texts in requests of at most the server's
``max_texts_per_request`` (read from ``GET /v1/model``) and yields ``{"text", ...}`` per text.
A 4xx/5xx answer raises :class:`ModerationError` with the server's reason and message.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Self

import httpx


class ModerationError(RuntimeError):
    def __init__(self, message: str, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status, self.reason = status, reason


class ModerationClient:
    def __init__(self, url: str, timeout_s: float = 60.0):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str) -> Any:
        try:
            r = self._http.get(path)
        except httpx.HTTPError as e:
            raise ModerationError(f"{self.url}{path}: {type(e).__name__}: {e}") from e
        if r.status_code != 200:
            raise ModerationError(f"{self.url}{path}: HTTP {r.status_code}: {r.text[:300]}", r.status_code)
        return r.json()

    def model(self) -> dict[str, Any]:
        """What serves now: version, backend, limits, swaps."""
        return self._get("/v1/model")

    def moderate(self, texts: list[str]) -> list[dict[str, Any]]:
        try:
            r = self._http.post("/v1/moderate", json={"texts": list(texts)})
        except httpx.HTTPError as e:
            raise ModerationError(f"{self.url}/v1/moderate: {type(e).__name__}: {e}") from e
        if r.status_code == 200:
            return r.json()
        try:
            err = r.json()["error"]
            reason, message = err["reason"], err["message"]
        except (ValueError, KeyError, TypeError):  # not the API's error body (a proxy, a crash)
            raise ModerationError(f"{self.url}/v1/moderate: HTTP {r.status_code}: {r.text[:300]}",
                                  r.status_code) from None
        raise ModerationError(f"{self.url}/v1/moderate: HTTP {r.status_code} {reason}: {message}",
                              r.status_code, reason)

    def moderate_all(self, texts: Iterable[str]) -> Iterator[dict[str, Any]]:
        size = int(self.model()["limits"]["max_texts_per_request"])
        batch: list[str] = []
        for t in texts:
            batch.append(t)
            if len(batch) >= size:
                yield from ({"text": x, **r} for x, r in zip(batch, self.moderate(batch), strict=True))
                batch = []
        if batch:
            yield from ({"text": x, **r} for x, r in zip(batch, self.moderate(batch), strict=True))
