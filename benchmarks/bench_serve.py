"""The moderation API (``chintox serve``, vLLM backend) against vLLM's own server, in one run.

    .venv/bin/python benchmarks/bench_serve.py [--seconds 8] [--swap-seconds 40] [--offline-texts 1024]

Everything runs on 127.0.0.1, on ToxiCN test texts, cycled, each behind its request's serial number
(``[n] text``: no text is sent twice, so vLLM's prefix cache serves the shared prompt prefix and nothing
more; the offline pass scores distinct texts as they are), in bounded phases (``--seconds`` each,
after a warm-up). The machine is shared, so each figure is read as a ratio against a baseline measured
in the same run:

1. A throwaway registry in a temp dir: the landed detector (``models/stage2`` and its
   ``reports/metrics.json``) registered as v1 and promoted; then the copy's card gets another
   ``config_hash`` (as a retrain would), its metrics the new folder hash, and it is registered as v2.
   v2 has the SAME weights as v1: the swap phase times the swap mechanics, not a different model.
2. The service (``python -m chintox.cli serve``, ``serve.backend=vllm``, following the champion alias)
   as a subprocess, and a second, direct vLLM server started here with the engine's own command line
   (:class:`chintox.serving.engine.VLLMServerEngine`), both loaded at once; phases run one at a time.
3. Phases: (a) direct ``/generative_scoring`` with 32 and 128 texts per request at concurrency 1 and 2;
   (b) direct, one text per request, concurrency 1; (c) the API, one text per request, at concurrency
   1, 8 and 32; (d) the API, 64 texts per request, concurrency 2; (e) offline ``VLLMScorer`` over
   ``--offline-texts`` texts in one call (start-up excluded); (f) 16 one-text clients for
   ``--swap-seconds`` while v2 is promoted after ``--swap-at`` seconds (the phase goes on until v2 has
   served for ``--after-seconds``, at most ``--swap-max-seconds``). (a)-(d) run ``--rounds`` times in
   turn; each phase reports its round with the most texts/s (the latency ratio: each side's lowest p50)
   and keeps every round's figures.

Ratios (targets from the serving issue): API one-text at concurrency 32 / best direct batched (>= 0.80);
API p50 at concurrency 1 / direct one-text p50 (<= 1.20); offline / API at concurrency 32 (>= 1.0);
failed requests during the swap (0) and seconds from the promotion to the first v2 answer.
The service's ``chintox_batch_texts`` histogram is read around each API phase (texts per scoring call).
Results: printed and written to ``reports/bench_serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = {"api_c32_over_direct_batched": (">=", 0.80), "api_p50_c1_over_direct_p50": ("<=", 1.20),
           "offline_over_api_c32": (">=", 1.0), "swap_failed_requests": ("==", 0)}


# ------------------------------------------------------------------------------------------ setup
def load_texts(path: Path) -> list[str]:
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return [r["text"] for r in rows if r.get("text", "").strip()]


def overrides(tmp: Path) -> dict[str, str]:
    return {"paths.models": str(tmp / "models"), "paths.reports": str(tmp / "reports"),
            "mlflow.tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "mlflow.artifact_root": str(tmp / "artifacts")}


def make_registry(cfg: Any, tmp: Path) -> dict[str, str]:
    """v1 = the landed detector (promoted); v2 = the same weights under another card ``config_hash``."""
    from chintox.card import DetectorCard
    from chintox.provenance import dir_sha256
    from tasks.promote import run_promote
    from tasks.register import run_register

    det, metrics = tmp / "models" / "stage2", tmp / "reports" / "metrics.json"
    shutil.copytree(REPO / "models" / "stage2", det)
    metrics.parent.mkdir(parents=True)
    shutil.copy2(REPO / "reports" / "metrics.json", metrics)
    v1 = str(run_register(cfg)["version"])
    run_promote(cfg, version=v1)
    card = DetectorCard.read(det)
    dataclasses.replace(card, config_hash=f"{card.config_hash}-bench-v2").write(det)
    raw = json.loads(metrics.read_text(encoding="utf-8"))
    raw["detector_sha256"] = dir_sha256(det)
    metrics.write_text(json.dumps(raw, indent=2, ensure_ascii=False), encoding="utf-8")
    v2 = str(run_register(cfg)["version"])
    return {"v1": v1, "v2": v2, "detector": str(det)}


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "DO_NOT_TRACK": "1", "MLFLOW_ENABLE_UV_AUTO_DETECT": "false"})
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def serve_args(tmp: Path, profile: str) -> list[str]:
    sets = {**overrides(tmp), "serve.port": 0, "serve.backend": "vllm", "serve.poll_s": 1,
            "serve.log_url": f"sqlite:///{tmp / 'predictions.db'}", "serve.model_cache": str(tmp / "cache")}
    args = [sys.executable, "-m", "chintox.cli", "serve", "--params", "params.yaml", "--profile", profile]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def start_service(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as fh:  # the child keeps its own descriptor
        return subprocess.Popen(args, cwd=REPO, env=child_env(), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_service(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the group started here, by its id; it stops its own vLLM
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


async def wait_service(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    import httpx

    deadline = time.monotonic() + timeout
    url = None
    async with httpx.AsyncClient(timeout=5) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited ({proc.returncode}):\n{log.read_text(errors='replace')[-4000:]}")
            if url is None:
                m = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
                url = m.group(1) if m else None
            if url is not None:
                try:
                    if (await c.get(f"{url}/readyz")).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"the service was not ready in {timeout:.0f} s:\n{log.read_text(errors='replace')[-4000:]}")


# ------------------------------------------------------------------------------------ load generator
def summarize(recs: list[tuple[float, float, int, int, str | None]], t0: float, t1: float) -> dict[str, Any]:
    """recs: (start, end, status, texts, version) of the requests that ended in [t0, t1]."""
    import numpy as np

    ok = [r for r in recs if r[2] == 200]
    lat = np.array([(r[1] - r[0]) * 1000.0 for r in ok]) if ok else np.array([float("nan")])
    span = max(t1 - t0, 1e-9)
    return {"requests": len(recs), "failed": len(recs) - len(ok), "texts": sum(r[3] for r in ok),
            "seconds": round(span, 3), "texts_per_s": round(sum(r[3] for r in ok) / span, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2)}


class _Resp:
    def __init__(self, status: int, body: bytes):
        self.status_code, self._body = status, body

    def json(self) -> Any:
        import orjson

        return orjson.loads(self._body)

    @property
    def text(self) -> str:
        return self._body.decode("utf-8", "replace")


class LoadClient:
    """The load generator's HTTP client: aiohttp (about a tenth of httpx's CPU per request here), with
    the two calls the phases use. It shares the 2 cores with the servers it measures, so it must be
    cheap; the direct and the API phases use the same client, so the ratios compare like with like."""

    def __init__(self, connections: int = 128):
        import aiohttp

        self._s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                        timeout=aiohttp.ClientTimeout(total=300, connect=10))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._s.close()

    async def post(self, url: str, json: Any) -> _Resp:
        async with self._s.post(url, json=json) as r:
            return _Resp(r.status, await r.read())

    async def get(self, url: str) -> _Resp:
        async with self._s.get(url) as r:
            return _Resp(r.status, await r.read())



class Load:
    """Closed-loop clients over one :class:`LoadClient`: each sends its next request as soon as its
    previous one is answered, until the deadline (or ``stop`` is set)."""

    def __init__(self, client: Any, n_items: int, serial: int = 0):
        self.client = client
        self.n_items = n_items
        self.cursor = 0
        self.serial = serial

    def take(self, k: int) -> list[tuple[int, int]]:
        """k (text index, serial number) pairs: the texts cycle, the serial numbers never repeat."""
        idx = [((self.cursor + i) % self.n_items, self.serial + i) for i in range(k)]
        self.cursor = (self.cursor + k) % self.n_items
        self.serial += k
        return idx

    async def run(self, post: Any, per_request: int, concurrency: int, seconds: float,
                  stop: asyncio.Event | None = None, recs: list | None = None) -> tuple[list, float, float]:
        """(records (start, end, status, texts, version), start, end); ``recs``: a list to fill as it goes."""
        recs = [] if recs is None else recs
        t0 = time.monotonic()
        deadline = t0 + seconds

        async def worker() -> None:
            while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
                idx = self.take(per_request)
                s = time.monotonic()
                try:
                    status, version = await post(idx)
                except Exception as e:  # noqa: BLE001 - a transport error is a failed request
                    status, version = -1, repr(e)[:200]
                recs.append((s, time.monotonic(), status, len(idx), version))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return recs, t0, time.monotonic()


def tagged(text: str, n: int) -> str:
    """The text behind its request's serial number: a text seen again (the texts cycle) shares no KV
    block with its earlier copy, so vLLM's prefix cache helps with the shared prompt prefix only."""
    return f"[{n}] {text}"


def direct_post(client: Any, engine: Any, rows: list[list[int]], tags: list[list[int]]) -> Any:
    base = {"model": engine.served_name, "query": list(engine.encoder.prefix_ids),
            "label_token_ids": list(engine.answer_ids), "apply_softmax": True, "add_special_tokens": False}

    async def post(idx: list[int]) -> tuple[int, str | None]:
        items = [tags[n % len(tags)] + rows[i] for i, n in idx]
        r = await client.post(f"{engine.url}/generative_scoring", json={**base, "items": items})
        if r.status_code == 200 and len(r.json()["data"]) != len(idx):
            return -2, None
        return r.status_code, None

    return post


def api_post(client: Any, url: str, texts: list[str]) -> Any:
    async def post(idx: list[int]) -> tuple[int, str | None]:
        r = await client.post(f"{url}/v1/moderate", json={"texts": [tagged(texts[i], n) for i, n in idx]})
        if r.status_code != 200:
            return r.status_code, None
        out = r.json()
        return (200 if len(out) == len(idx) else -2), out[0]["model_version"]

    return post


async def batch_hist(client: Any, url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families((await client.get(f"{url}/metrics")).text):
        if fam.name == "chintox_batch_texts":
            for s in fam.samples:
                key = s.name.rsplit("_", 1)[-1] + (f"_le_{s.labels['le']}" if "le" in s.labels else "")
                out[key] = s.value
        elif fam.name == "chintox_request_latency_seconds":
            for s in fam.samples:
                if s.name.endswith(("_sum", "_count")):
                    out["latency_" + s.name.rsplit("_", 1)[-1]] = s.value
    return out


def hist_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    calls = d.get("count", 0.0)
    buckets, prev = {}, 0.0
    for k in sorted((k for k in d if k.startswith("bucket_le_")), key=lambda k: float(k[10:])):
        n = d[k] - prev
        prev = d[k]
        if n:
            buckets[k[10:]] = int(n)
    n_req = d.get("latency_count", 0.0)
    return {"scoring_calls": int(calls), "mean_texts_per_call": round(d.get("sum", 0.0) / calls, 2) if calls else None,
            "calls_by_bucket_le": buckets,
            "mean_service_latency_ms": round(1000.0 * d.get("latency_sum", 0.0) / n_req, 1) if n_req else None}


# ------------------------------------------------------------------------------------------ phases
async def online_phases(args: argparse.Namespace, url: str, detector: Path, texts: list[str],
                        tmp: Path, res: dict[str, Any]) -> None:
    from chintox.serving.engine import VLLMServerEngine

    engine = VLLMServerEngine("direct", detector, "card", kvcache_gb=args.kvcache_gb, block_size=args.block_size,
                              log_dir=tmp / "direct-logs")
    t = time.monotonic()
    try:
        await engine.start(args.startup_timeout)
        res["direct_server"] = {"startup_s": round(time.monotonic() - t, 1),
                                "command": " ".join(["python", *engine.command()[1:]]).replace(str(tmp), "<tmp>")}
        rows, _ = engine.encode(texts)
        tok = engine.encoder.tokenizer  # the serial tags' ids, made before the clock runs
        tags = tok([tagged("", n) for n in range(args.tags)], add_special_tokens=False)["input_ids"]
        async with LoadClient(128) as client:
            load = Load(client, len(texts))
            d_post, a_post = direct_post(client, engine, rows, tags), api_post(client, url, texts)

            async def phase(name: str, post: Any, per: int, conc: int, hist: bool = False) -> None:
                await load.run(post, per, conc, args.warmup_seconds)
                h0 = await batch_hist(client, url) if hist else None
                recs, t0, t1 = await load.run(post, per, conc, args.seconds)
                out = {"per_request": per, "concurrency": conc, **summarize(recs, t0, t1)}
                if hist:
                    out["service_batches"] = hist_delta(h0, await batch_hist(client, url))
                print(f"  {name:<28} {out['texts_per_s']:>8.1f} texts/s  p50 {out['p50_ms']:>8.1f} ms  "
                      f"p99 {out['p99_ms']:>8.1f} ms  failed {out['failed']}", flush=True)
                runs.setdefault(name, []).append(out)

            runs: dict[str, list[dict[str, Any]]] = {}
            for rnd in range(args.rounds):  # the whole sequence again: slow spells of a shared machine spread out
                print(f"phases, round {rnd + 1} of {args.rounds}:", flush=True)
                for per in (32, 128):
                    for conc in (1, 2):
                        await phase(f"direct_batched_{per}x_c{conc}", d_post, per, conc)
                await phase("direct_one_c1", d_post, 1, 1)
                for conc in (1, 8, 32):
                    await phase(f"api_one_c{conc}", a_post, 1, conc, hist=True)
                await phase("api_batched_64x_c2", a_post, 64, 2, hist=True)
            for name, outs in runs.items():  # the round with the most texts/s; every round's figures kept
                best = max(outs, key=lambda o: o["texts_per_s"])
                res["phases"][name] = {**best, "best_p50_ms": min(o["p50_ms"] for o in outs),
                                       "rounds": [{k: o[k] for k in ("texts_per_s", "p50_ms", "p99_ms", "failed")}
                                                  for o in outs]}
    finally:
        await engine.close()


def offline_phase(args: argparse.Namespace, cfg: Any, texts: list[str]) -> dict[str, Any]:
    from chintox.scoring import make_scorer

    scorer = make_scorer(REPO / "models" / "stage2", cfg, "vllm", progress=False)
    try:
        scorer.score(texts[:args.warmup_texts])
        batch = [texts[i % len(texts)] for i in range(args.warmup_texts, args.warmup_texts + args.offline_texts)]
        t0 = time.perf_counter()
        scorer.score(batch)
        dt = time.perf_counter() - t0
    finally:
        scorer.close()
    out = {"texts": len(batch), "seconds": round(dt, 3), "texts_per_s": round(len(batch) / dt, 1),
           "startup_s": round(scorer.startup_seconds, 1), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    print(f"  {'offline VLLMScorer':<28} {out['texts_per_s']:>8.1f} texts/s  ({len(batch)} texts in one call)",
          flush=True)
    return out


async def swap_phase(args: argparse.Namespace, cfg: Any, url: str, texts: list[str], v1: str, v2: str) -> dict:
    from tasks.promote import run_promote

    async with LoadClient(64) as client:
        load = Load(client, len(texts), serial=10 * args.tags)  # serial numbers no earlier phase used
        load.cursor = len(texts) // 2
        post = api_post(client, url, texts)
        await load.run(post, 1, args.swap_clients, args.warmup_seconds)
        stop = asyncio.Event()
        marks: dict[str, float] = {}
        live: list = []
        task = asyncio.create_task(load.run(post, 1, args.swap_clients, args.swap_max_seconds, stop, live))
        t_start = time.monotonic()
        await asyncio.sleep(args.swap_at)
        marks["promote_called"] = time.monotonic()
        decision = await asyncio.to_thread(run_promote, cfg, version=v2, force=True, reason="benchmark swap")
        marks["promote_returned"] = time.monotonic()
        while not task.done():  # until v2 answered for --after-seconds and --swap-seconds have passed
            v2_seen = next((r[1] for r in live if r[2] == 200 and r[4] == v2), None)
            now = time.monotonic()
            if v2_seen is not None and now - v2_seen >= args.after_seconds and now - t_start >= args.swap_seconds:
                break
            await asyncio.sleep(0.5)
        stop.set()
        recs, t0, t1 = await task
        info = (await client.get(f"{url}/v1/model")).json()
    recs.sort(key=lambda r: r[1])
    first_v2 = next((r[1] for r in recs if r[2] == 200 and r[4] == v2), None)
    last_v1 = max((r[1] for r in recs if r[2] == 200 and r[4] == v1), default=None)
    tp, tr = marks["promote_called"], marks["promote_returned"]
    before = summarize([r for r in recs if r[1] < tp], t0, tp)
    during = summarize([r for r in recs if tr <= r[1] < (first_v2 or t1)], tr, first_v2 or t1) if first_v2 else None
    after = summarize([r for r in recs if first_v2 is not None and r[1] > first_v2], first_v2, t1) if first_v2 else None
    swap = next((s for s in info.get("swaps", []) if s.get("to") == v2), None)
    failed = [r for r in recs if r[2] != 200]
    out = {"clients": args.swap_clients, "seconds": round(t1 - t0, 1), "requests": len(recs), "failed_requests":
           len(failed), "failed_examples": [list(r[2:]) for r in failed[:5]],
           "versions_answered": sorted({str(r[4]) for r in recs if r[2] == 200}),
           "promote_decision": decision.get("decision"), "promote_call_s": round(tr - tp, 3),
           "promote_returned_to_first_v2_s": round(first_v2 - tr, 2) if first_v2 else None,
           "last_v1_answer_after_first_v2_s": round(last_v1 - first_v2, 3) if first_v2 and last_v1 else None,
           "service_detect_to_serve_s": swap.get("detect_to_serve_s") if swap else None,
           "service_swap": swap, "before": before, "while_v2_starts": during, "after": after,
           "note": "v2 is v1's weights under another card config_hash: the swap mechanics are timed"}
    print(f"  {'swap (16 clients)':<28} failed {out['failed_requests']}, promotion -> first v2 answer "
          f"{out['promote_returned_to_first_v2_s']} s, service detect->serve {out['service_detect_to_serve_s']} s",
          flush=True)
    return out


# ------------------------------------------------------------------------------------------ report
def ratios(res: dict[str, Any]) -> dict[str, Any]:
    ph = res["phases"]
    best_key = max((k for k in ph if k.startswith("direct_batched_")), key=lambda k: ph[k]["texts_per_s"])
    vals = {"api_c32_over_direct_batched": ph["api_one_c32"]["texts_per_s"] / ph[best_key]["texts_per_s"],
            "api_p50_c1_over_direct_p50": ph["api_one_c1"]["best_p50_ms"] / ph["direct_one_c1"]["best_p50_ms"]}
    if "offline" in res:
        vals["offline_over_api_c32"] = res["offline"]["texts_per_s"] / ph["api_one_c32"]["texts_per_s"]
    if "swap" in res:
        vals["swap_failed_requests"] = res["swap"]["failed_requests"]
    out = {"best_direct_batched": best_key}
    for k, v in vals.items():
        op, target = TARGETS[k]
        met = {">=": v >= target, "<=": v <= target, "==": v == target}[op]
        out[k] = {"value": round(v, 3) if isinstance(v, float) else v, "target": f"{op} {target}", "met": bool(met)}
    if "swap" in res:
        out["swap_promote_to_serving_s"] = res["swap"]["promote_returned_to_first_v2_s"]
    return out


def print_table(res: dict[str, Any]) -> None:
    print("\nphase                          texts/s    p50 ms    p95 ms    p99 ms  failed")
    for k, v in res["phases"].items():
        print(f"{k:<28} {v['texts_per_s']:>9.1f} {v['p50_ms']:>9.1f} {v['p95_ms']:>9.1f} {v['p99_ms']:>9.1f} "
              f"{sum(r['failed'] for r in v['rounds']):>7}")
    if "offline" in res:
        print(f"{'offline_vllmscorer':<28} {res['offline']['texts_per_s']:>9.1f}")
    print("\nratio                              value  target    met")
    for k, v in res["ratios"].items():
        if isinstance(v, dict):
            print(f"{k:<32} {v['value']:>8} {v['target']:>7}  {'yes' if v['met'] else 'NO'}")
    if "swap" in res:
        s = res["swap"]
        print(f"swap: {s['failed_requests']} failed of {s['requests']}; promotion -> first v2 answer "
              f"{s['promote_returned_to_first_v2_s']} s (service detect->serve {s['service_detect_to_serve_s']} s); "
              f"texts/s before {s['before']['texts_per_s']}, after "
              f"{s['after']['texts_per_s'] if s['after'] else None}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "splits" / "toxicn_test.jsonl")
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per phase")
    ap.add_argument("--warmup-seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2, help="the phase sequence (a)-(d) this many times; best kept")
    ap.add_argument("--offline-texts", type=int, default=1024)
    ap.add_argument("--tags", type=int, default=200_000, help="distinct serial tags for the direct requests")
    ap.add_argument("--warmup-texts", type=int, default=64)
    ap.add_argument("--swap-clients", type=int, default=16)
    ap.add_argument("--swap-seconds", type=float, default=40.0)
    ap.add_argument("--swap-at", type=float, default=8.0)
    ap.add_argument("--after-seconds", type=float, default=8.0, help="v2 must answer this long before the end")
    ap.add_argument("--swap-max-seconds", type=float, default=300.0)
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument("--skip-offline", action="store_true")
    ap.add_argument("--skip-swap", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench_serve.json")
    args = ap.parse_args()

    import vllm

    from chintox.config import load_config

    texts = load_texts(args.data)
    res: dict[str, Any] = {
        "what": "chintox serve (vLLM backend) vs vLLM's OpenAI server (/generative_scoring) vs offline "
                "VLLMScorer, same detector (models/stage2), same machine, same run",
        "data": str(args.data.relative_to(REPO)) if args.data.is_relative_to(REPO) else args.data.name,
        "n_texts": len(texts), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()], "vllm_version": vllm.__version__,
        "omp_num_threads_servers": os.environ.get("OMP_NUM_THREADS"),
        "command": "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "data")},
        "phases": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    proc, ok = None, False
    try:
        cfg = load_config(REPO / "params.yaml", args.profile, overrides(tmp))
        res["kvcache_gb"], res["block_size"] = cfg.evaluate.vllm_kvcache_gb, cfg.evaluate.vllm_block_size
        args.kvcache_gb, args.block_size = cfg.evaluate.vllm_kvcache_gb, cfg.evaluate.vllm_block_size
        reg = make_registry(cfg, tmp)
        res["registry"] = {"v1": reg["v1"], "v2": reg["v2"], "v2_note": "same weights as v1; only the card's "
                           "config_hash differs (as after a retrain), so the swap mechanics are what is timed"}
        log = tmp / "serve.log"
        sargs = serve_args(tmp, args.profile)
        res["service_command"] = " ".join(["python", *sargs[1:]]).replace(str(tmp), "<tmp>")
        t = time.monotonic()
        proc = start_service(sargs, log)
        url = asyncio.run(wait_service(proc, log, args.startup_timeout))
        res["service_startup_s"] = round(time.monotonic() - t, 1)
        print(f"service ready in {res['service_startup_s']} s; registry v1={reg['v1']} v2={reg['v2']}", flush=True)
        asyncio.run(online_phases(args, url, Path(reg["detector"]), texts, tmp, res))
        if not args.skip_offline:
            res["offline"] = offline_phase(args, cfg, texts)
        if not args.skip_swap:
            res["swap"] = asyncio.run(swap_phase(args, cfg, url, texts, reg["v1"], reg["v2"]))
        ok = True
    finally:
        stop_service(proc)
        if proc is not None:
            res["service_exit_code"] = proc.returncode
        res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"failed; logs kept in {tmp}", file=sys.stderr)
    res["ratios"] = ratios(res)
    print_table(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
