"""Which version serves: the live engine, and the swap when the alias moves.

Every ``poll_s`` seconds ``resolve()`` says which version the served alias names (``@champion``).
When it changes (a promotion, or a rollback: the same path), the new version is fetched and started
*beside* the live one, and must answer its health check; only then does it take the traffic (one
pointer swap on the event loop). The old version finishes the scoring calls it was given (at most
``drain_timeout_s``) and is closed. If the new version fails to start, the live one keeps serving,
the error is kept for ``/readyz`` and the metrics, and the next poll tries again.

``resolve`` and ``fetch`` are the caller's (the registry lives in ``tasks/serve.py``); both block, so
they run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chintox.serving import ServingError
from chintox.serving.engine import Engine

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, resolve: Callable[[], str], fetch: Callable[[str], Path],
                 make_engine: Callable[[str, Path], Engine], *, follow: bool = True, poll_s: float = 5.0,
                 startup_timeout_s: float = 240.0, drain_timeout_s: float = 30.0):
        self._resolve = resolve
        self._fetch = fetch
        self._make_engine = make_engine
        self.follow = follow
        self.poll_s = float(poll_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.drain_timeout_s = float(drain_timeout_s)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # called with each swap's record
        self.live: Engine | None = None
        self.swaps: list[dict[str, Any]] = []
        self.last_error: str | None = None
        self.last_poll: dict[str, Any] = {}  # when the alias was last read, how long it took, what it said
        self._retiring: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        self._loading = asyncio.Lock()

    def current(self) -> Engine | None:
        return self.live

    async def start(self) -> None:
        """Load the version the alias names now (a failure here is fatal: nothing to serve)."""
        version = await asyncio.to_thread(self._resolve)
        await self._load(version, detected_at=time.time())
        if self.follow:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="alias-poller")

    async def _load(self, version: str, detected_at: float) -> None:
        async with self._loading:
            if self.live is not None and self.live.version == version:
                return
            t0 = time.time()
            folder = await asyncio.to_thread(self._fetch, version)
            engine = self._make_engine(version, folder)
            try:
                await engine.start(self.startup_timeout_s)
                if not await engine.healthy():
                    raise ServingError(f"version {version} started but fails its health check")
            except BaseException:
                await engine.close()
                raise
            old, self.live = self.live, engine  # from here on, new calls go to the new version
            swap = {"from": old.version if old else None, "to": version, "detected_at": detected_at,
                    "serving_at": time.time(), "start_s": round(time.time() - t0, 3)}
            swap["detect_to_serve_s"] = round(swap["serving_at"] - detected_at, 3)
            self.swaps.append(swap)
            self.last_error = None
            log.info("now serving version %s (was %s; ready %.1f s after the alias moved)", version,
                     swap["from"], swap["detect_to_serve_s"])
            for listener in self.listeners:
                listener(swap)
            if old is not None:
                t = asyncio.get_running_loop().create_task(self._retire(old))
                self._retiring.add(t)
                t.add_done_callback(self._retiring.discard)

    async def _retire(self, old: Engine) -> None:
        if not await old.drain(self.drain_timeout_s):
            log.warning("version %s: %d scoring calls still in flight after %.0f s; closing it anyway",
                        old.version, old.in_flight, self.drain_timeout_s)
        await old.close()
        log.info("version %s stopped", old.version)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            t0 = time.time()
            try:
                version = await asyncio.to_thread(self._resolve)
                self.last_poll = {"at": t0, "read_s": round(time.time() - t0, 3), "version": version}
            except Exception as e:  # noqa: BLE001 - the registry may be down; keep serving
                self.last_error = f"reading the alias: {e}"
                log.warning("could not read the served alias (still serving %s): %s",
                            self.live.version if self.live else None, str(e).splitlines()[0][:300])
                continue
            if self.live is None or version != self.live.version:
                log.info("the alias now names version %s (read in %.2f s); starting it", version,
                         self.last_poll["read_s"])
                try:
                    await self._load(version, detected_at=t0)
                except Exception as e:  # noqa: BLE001 - keep the live version serving
                    self.last_error = f"version {version} did not start: {e}"
                    log.error("version %s did not start; still serving %s: %s", version,
                              self.live.version if self.live else None, e)

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        live, self.live = self.live, None
        if live is not None:
            await live.close()
