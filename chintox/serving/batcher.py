"""Concurrent requests gathered into one scoring call, within a bounded wait.

Many clients send one text at a time; one text per scoring call leaves most of an engine's
throughput unused (vLLM's server on this CPU: 126 texts/s for one-text requests at concurrency 8,
638 for 128-text requests). The batcher keeps at most ``max_concurrent`` scoring calls in flight:

- when no call is in flight, what is queued goes at once (a lone client waits for nothing);
- while a call is in flight, the next one gathers the requests that arrive meanwhile, waiting at most
  ``wait_ms`` for company, up to ``max_texts`` texts (a bigger request goes on its own, whole).

A request's texts always go in one call, so one engine (one version) judges all of them. The engine
is taken when the call is dispatched and marked busy (:meth:`Engine.acquire`) at that moment, so a
version being retired by the supervisor finishes every call it was given. This is a few dozen lines
on asyncio: Ray Serve's ``@serve.batch`` does the same but brings a whole serving framework with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from chintox.serving import ServingError
from chintox.serving.engine import Engine, Judged


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, current: Callable[[], Engine | None], max_texts: int = 128, wait_ms: float = 5.0,
                 max_concurrent: int = 2, on_batch: Callable[[int], None] | None = None):
        self._current = current
        self.max_texts = int(max_texts)
        self.wait_s = float(wait_ms) / 1000.0
        self.max_concurrent = int(max_concurrent)
        self._on_batch = on_batch
        self._items: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.max_concurrent)
        self.running = 0
        self._task: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
        for it in self._items:
            if not it.future.done():
                it.future.set_exception(ServingError("the service is stopping"))
        self._items.clear()

    async def submit(self, texts: list[str]) -> tuple[Engine, list[Judged]]:
        """(the engine, i.e. the version, that judged them; one judgement per text)."""
        fut = asyncio.get_running_loop().create_future()
        self._items.append(_Item(list(texts), fut))
        self._wake.set()
        return await fut

    def _take(self, batch: list[_Item], n: int) -> int:
        while self._items and (n == 0 or n + len(self._items[0].texts) <= self.max_texts):
            it = self._items.popleft()
            if it.future.done():  # the client went away while it waited
                continue
            batch.append(it)
            n += len(it.texts)
        return n

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._items:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._slots.acquire()
            batch: list[_Item] = []
            n = self._take(batch, 0)
            if self.running > 0 and self.wait_s > 0:
                deadline = loop.time() + self.wait_s
                while n < self.max_texts and not self._items and (left := deadline - loop.time()) > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), left)
                    n = self._take(batch, n)
            if not batch:
                self._slots.release()
                continue
            engine = self._current()
            if engine is None:
                self._slots.release()
                self._fail(batch, ServingError("no model version is loaded yet"))
                continue
            engine.acquire()  # before the call is scheduled: a retiring version waits for it
            self.running += 1
            t = loop.create_task(self._run(engine, batch))
            self._calls.add(t)
            t.add_done_callback(self._calls.discard)

    @staticmethod
    def _fail(batch: list[_Item], exc: BaseException) -> None:
        for it in batch:
            if not it.future.done():
                it.future.set_exception(exc)

    async def _run(self, engine: Engine, batch: list[_Item]) -> None:
        try:
            texts = [t for it in batch for t in it.texts]
            if self._on_batch is not None:
                self._on_batch(len(texts))
            judged = await engine.judge(texts)
            i = 0
            for it in batch:
                part = judged[i:i + len(it.texts)]
                i += len(it.texts)
                if not it.future.done():
                    it.future.set_result((engine, part))
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error
            self._fail(batch, e)
        finally:
            engine.release()
            self.running -= 1
            self._slots.release()
