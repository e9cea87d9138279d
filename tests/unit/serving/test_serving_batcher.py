"""The batcher and the supervisor on fake engines (no model): what is gathered, what waits, what a
swap does with calls in flight, and what a failing new version leaves serving."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from chintox.serving import ServingError
from chintox.serving.batcher import MicroBatcher
from chintox.serving.engine import Engine, Judged
from chintox.serving.supervisor import Supervisor


class FakeEngine(Engine):
    """Scores len(text) / 100 after ``delay`` seconds; records each call's texts."""

    backend = "fake"

    def __init__(self, version: str, delay: float = 0.0, fail_start: bool = False, fail_score: bool = False):
        self.version, self.delay, self.fail_start, self.fail_score = version, delay, fail_start, fail_score
        self.threshold = 0.5
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.calls: list[list[str]] = []
        self.closed = False
        self.started = False

    async def start(self, timeout_s: float) -> None:
        if self.fail_start:
            raise ServingError(f"version {self.version} does not load")
        self.started = True

    async def healthy(self) -> bool:
        return self.started and not self.closed

    async def judge(self, texts: list[str]) -> list[Judged]:
        self.calls.append(list(texts))
        await asyncio.sleep(self.delay)
        if self.closed:
            raise RuntimeError("scored on a closed engine")
        if self.fail_score:
            raise RuntimeError("engine crashed")
        return [Judged(len(t) / 100, int(len(t) >= 50), False) for t in texts]

    async def _score_rows(self, texts, rows):  # pragma: no cover - judge is overridden
        raise NotImplementedError

    async def close(self) -> None:
        self.closed = True


def run(coro):
    return asyncio.run(coro)


def test_lone_request_does_not_wait_and_concurrent_ones_are_gathered():
    async def main():
        eng = FakeEngine("1", delay=0.2)
        b = MicroBatcher(lambda: eng, max_texts=8, wait_ms=1000, max_concurrent=1)
        b.start()
        t0 = time.perf_counter()
        v, out = await b.submit(["a" * 10])
        lone = time.perf_counter() - t0
        assert v is eng and out[0].score == pytest.approx(0.1)
        # 1 request in flight, then 12 one-text requests arrive: gathered into calls of at most 8
        first = asyncio.create_task(b.submit(["x"]))
        await asyncio.sleep(0.01)
        rest = await asyncio.gather(*(b.submit([f"t{i}"]) for i in range(12)))
        await first
        await b.stop()
        return lone, eng.calls, rest

    lone, calls, rest = run(main())
    assert lone < 0.2 + 0.5  # not the 1 s batch wait: nothing else was in flight
    assert calls[0] == ["a" * 10] and calls[1] == ["x"]
    assert [len(c) for c in calls[2:]] == [8, 4]
    assert [r[1][0].score for r in rest] == [len(f"t{i}") / 100 for i in range(12)]  # each its own answer


def test_a_request_is_never_split_and_a_big_one_goes_whole():
    async def main():
        eng = FakeEngine("1", delay=0.05)
        b = MicroBatcher(lambda: eng, max_texts=4, wait_ms=50, max_concurrent=1)
        b.start()
        outs = await asyncio.gather(b.submit(["a"]), b.submit(["b", "c", "d"]), b.submit(list("efghij")),
                                    b.submit(["k", "l"]))
        await b.stop()
        return eng.calls, outs

    calls, outs = run(main())
    assert ["e", "f", "g", "h", "i", "j"] in calls  # alone and whole, though over max_texts
    for c in calls:
        assert len(c) <= 4 or c == list("efghij")
    assert [len(o[1]) for o in outs] == [1, 3, 6, 2]
    assert sorted(t for c in calls for t in c) == sorted("abcdefghijkl")


def test_engine_failure_fails_only_that_call():
    async def main():
        bad = FakeEngine("1", fail_score=True)
        good = FakeEngine("2")
        current = [bad]
        b = MicroBatcher(lambda: current[0], max_texts=8, wait_ms=1)
        b.start()
        with pytest.raises(RuntimeError, match="engine crashed"):
            await b.submit(["a"])
        current[0] = good
        v, _ = await b.submit(["b"])
        await b.stop()
        return v, bad

    v, bad = run(main())
    assert v.version == "2" and bad.in_flight == 0


def test_swap_drains_calls_in_flight_on_the_old_version():
    async def main():
        engines = {"1": FakeEngine("1", delay=0.5), "2": FakeEngine("2", delay=0.01)}
        alias = ["1"]
        sup = Supervisor(lambda: alias[0], lambda v: Path(v), lambda v, _p: engines[v], poll_s=0.05,
                         drain_timeout_s=5)
        await sup.start()
        b = MicroBatcher(sup.current, max_texts=8, wait_ms=1)
        b.start()
        slow = asyncio.create_task(b.submit(["on v1"]))
        await asyncio.sleep(0.05)  # dispatched to version 1, which takes 0.5 s
        alias[0] = "2"
        for _ in range(100):
            if sup.live.version == "2":
                break
            await asyncio.sleep(0.02)
        v_new, _ = await b.submit(["on v2"])
        closed_while_busy = engines["1"].closed
        v_old, out = await slow
        await asyncio.sleep(0.05)
        await b.stop()
        await sup.stop()
        return v_new, v_old, out, closed_while_busy, engines, sup.swaps

    v_new, v_old, out, closed_while_busy, engines, swaps = run(main())
    assert v_new.version == "2" and v_old.version == "1" and out[0].score > 0
    assert not closed_while_busy  # the old version was not closed under its call
    assert engines["1"].closed and engines["2"].closed
    assert [(s["from"], s["to"]) for s in swaps] == [(None, "1"), ("1", "2")]


def test_a_new_version_that_fails_to_start_leaves_the_old_one_serving():
    async def main():
        engines = {"1": FakeEngine("1"), "2": FakeEngine("2", fail_start=True)}
        alias = ["1"]
        sup = Supervisor(lambda: alias[0], lambda v: Path(v), lambda v, _p: engines[v], poll_s=0.05)
        await sup.start()
        alias[0] = "2"
        await asyncio.sleep(0.3)
        live, err = sup.live.version, sup.last_error
        await sup.stop()
        return live, err, engines["2"].closed

    live, err, closed2 = run(main())
    assert live == "1" and "version 2 did not start" in err and closed2


def test_int8_is_refused_for_weights_that_are_not_float32(tmp_path):
    from testutil import detector_card

    from chintox.serving.engine import LocalEngine

    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    (tmp_path / "prompt.txt").write_text("判断：")
    detector_card().write(tmp_path)
    with pytest.raises(ServingError, match="quantises float32 weights"):
        LocalEngine("3", tmp_path, dtype="bfloat16", quantization="int8")
    assert LocalEngine("3", tmp_path, dtype="float32", quantization="int8").quantization == "int8"
