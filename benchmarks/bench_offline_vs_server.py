"""Offline vLLM scoring (``VLLMScorer.score``) against vLLM's own OpenAI server on the same texts.

One run, same machine, same token ids: the ToxiCN test texts are encoded once with the scorer's
:class:`chintox.scoring.base.PromptEncoder` (shared prefix ids + per-text ids), then

(a) ``VLLMScorer.score`` over all of them (after a warm-up on a few texts; start-up excluded);
(b) a vLLM server started here as a subprocess on 127.0.0.1 (one process, eager, prefix caching,
    the same block size / dtype / window), asked ``POST /generative_scoring`` with
    ``query`` = the prefix ids, ``items`` = each text's ids, ``label_token_ids`` = [positive, negative],
    ``apply_softmax`` = true, in requests of ``--per-request`` texts from ``--clients`` concurrent
    clients (after a warm-up request; start-up excluded).

Both give p(positive) / (p(positive) + p(negative)); the largest absolute difference is reported.
The server gets the environment this script started with (not the ``OMP_NUM_THREADS`` that the
scorer sets in this process). Figures go to ``reports/bench_offline_vs_server.json``.

    python benchmarks/bench_offline_vs_server.py [--n 0] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_ENV = dict(os.environ)  # before the scorer sets OMP_NUM_THREADS etc. in this process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_texts(path: Path, n: int) -> list[str]:
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts[:n] if n > 0 else texts


def bench_offline(model: Path, prompt, texts: list[str], repeats: int, warmup: int) -> dict:
    from chintox.scoring.vllm_backend import VLLMScorer

    scorer = VLLMScorer(model, prompt, max_model_len=1024, dtype="float32", block_size=32,
                        kvcache_gb=1, progress=False)
    try:
        scorer.score(texts[:warmup])
        times, scores = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            scores = scorer.score(texts)
            times.append(time.perf_counter() - t0)
        return {"startup_s": round(scorer.startup_seconds, 2), "seconds": [round(t, 3) for t in times],
                "texts_per_s": round(len(texts) / min(times), 1), "scores": scores,
                "prefix_ids": scorer.encoder.prefix_ids, "rows": scorer.encoder.encode(texts),
                "answer_ids": list(scorer.answer_ids), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    finally:
        scorer.close()


async def _score_server(url: str, prefix: list[int], rows: list[list[int]], labels: list[int],
                        per_request: int, clients: int) -> list[float]:
    import httpx

    chunks = [(i, rows[i:i + per_request]) for i in range(0, len(rows), per_request)]
    out: list[float] = [float("nan")] * len(rows)
    queue: asyncio.Queue = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            start, items = queue.get_nowait()
            r = await client.post(url, json={"query": prefix, "items": items, "label_token_ids": labels,
                                             "apply_softmax": True})
            r.raise_for_status()
            for d in r.json()["data"]:
                out[start + d["index"]] = d["score"]

    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return out


def bench_server(model: Path, prefix: list[int], rows: list[list[int]], labels: list[int],
                 per_request: int, clients: int, repeats: int, warmup: int) -> dict:
    import httpx

    port = _free_port()
    env = {**BASE_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--enable-prefix-caching",
           "--block-size", "32", "--dtype", "float32", "--max-model-len", "1024"]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            t0 = time.perf_counter()
            base = f"http://127.0.0.1:{port}"
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read()[-4000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - t0 > 300:
                    raise TimeoutError("server did not become healthy in 300 s")
                time.sleep(1)
            startup = time.perf_counter() - t0
            url = f"{base}/generative_scoring"
            asyncio.run(_score_server(url, prefix, rows[:warmup], labels, per_request, 1))
            times, scores = [], None
            for _ in range(repeats):
                t1 = time.perf_counter()
                scores = asyncio.run(_score_server(url, prefix, rows, labels, per_request, clients))
                times.append(time.perf_counter() - t1)
            return {"startup_s": round(startup, 2), "seconds": [round(t, 3) for t in times],
                    "texts_per_s": round(len(rows) / min(times), 1), "scores": scores,
                    "per_request": per_request, "clients": clients,
                    "omp_num_threads": BASE_ENV.get("OMP_NUM_THREADS"),
                    "command": " ".join(["python"] + cmd[1:]).replace(str(REPO) + "/", "")}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "stage2" / "merged")
    ap.add_argument("--prompt", type=Path, default=REPO / "models" / "stage2" / "prompt.txt")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "splits" / "toxicn_test.jsonl")
    ap.add_argument("--n", type=int, default=0, help="first N texts (0 = all)")
    ap.add_argument("--per-request", type=int, default=128)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed passes each; the best is reported")
    ap.add_argument("--warmup", type=int, default=32)
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench_offline_vs_server.json")
    args = ap.parse_args()

    import numpy as np

    from chintox.prompting import load_prompt

    prompt = load_prompt(args.prompt)
    texts = _load_texts(args.data, args.n)
    off = bench_offline(args.model, prompt, texts, args.repeats, args.warmup)
    srv = bench_server(args.model, off.pop("prefix_ids"), off.pop("rows"), off.pop("answer_ids"),
                       args.per_request, args.clients, args.repeats, args.warmup)
    diff = float(np.max(np.abs(np.asarray(off.pop("scores")) - np.asarray(srv.pop("scores")))))
    res = {
        "what": "VLLMScorer.score vs vLLM OpenAI server /generative_scoring, same token ids, same process "
                "settings (eager, one process, prefix caching, block 32, float32, window 1024, 1 GiB KV)",
        "model": str(args.model).replace(str(REPO) + "/", ""),
        "data": str(args.data).replace(str(REPO) + "/", ""), "n_texts": len(texts),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "offline": off, "server": srv,
        "ratio_offline_over_server": round(off["texts_per_s"] / srv["texts_per_s"], 3),
        "max_abs_score_diff": diff,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"texts: {len(texts)}")
    print(f"offline: {off['texts_per_s']} texts/s  (passes {off['seconds']} s)")
    print(f"server : {srv['texts_per_s']} texts/s  ({args.per_request}/request, {args.clients} clients; "
          f"passes {srv['seconds']} s)")
    print(f"ratio offline/server: {res['ratio_offline_over_server']}")
    print(f"max |score diff|: {diff:.3g}")


if __name__ == "__main__":
    main()
