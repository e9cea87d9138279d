"""Pre-training throughput of the tiny base: float32 against bf16 autocast, at the configured shape and
at neighbouring ones, and the configured shape compiled (``model.tiny.pretrain_compile``), measured in
one run (rounds alternate the order; ratios against this run's own float32 baseline, never a number
from another day).

The step is the base step's: a full causal-LM forward and backward on ``pretrain_batch_size`` packed
sequences of ``pretrain_seq_len`` tokens, AdamW update, through the same autocast the step uses
(:class:`chintox.training.loop.SingleProcess`). Random token ids: the speed does not depend on the text.

    .venv/bin/python benchmarks/bench_pretrain.py [--steps 8] [--out reports/bench_pretrain.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _tokens_per_s(tcfg, bf16: bool, steps: int, vocab: int, compiled: bool = False) -> list[float]:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from chintox.training.loop import SingleProcess

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=vocab, hidden_size=tcfg.hidden_size, intermediate_size=tcfg.intermediate_size,
        num_hidden_layers=tcfg.num_layers, num_attention_heads=tcfg.num_heads,
        num_key_value_heads=tcfg.num_kv_heads, max_position_embeddings=tcfg.max_position_embeddings,
        tie_word_embeddings=True, use_sliding_window=False))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    acc = SingleProcess("cpu", bf16)
    # model.tiny.pretrain_compile: the step compiles the model once (fixed shapes) and runs it under
    # deterministic kernels, as here; the first (excluded) step carries the compilation
    torch.use_deterministic_algorithms(compiled)
    forward = torch.compile(model, dynamic=False) if compiled else model
    x = torch.randint(0, vocab, (tcfg.pretrain_batch_size, tcfg.pretrain_seq_len))
    rates = []
    for i in range(steps + 1):
        t = time.perf_counter()
        with acc.autocast():
            loss = forward(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up kernels and allocations (and compiles)
            rates.append(x.numel() / (time.perf_counter() - t))
    torch.use_deterministic_algorithms(False)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per shape and precision per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench_pretrain.json")
    args = ap.parse_args()

    import torch

    from chintox.config import load_config
    from chintox.modeling import cpu_supports_bf16

    t = load_config(REPO / "params.yaml", profile="tiny").model.tiny
    shapes = {
        "configured (256 x 4)": t,
        "wider (384 x 4)": replace(t, hidden_size=384, intermediate_size=1152, num_heads=12, num_kv_heads=6),
        "deeper (256 x 8)": replace(t, num_layers=8),
        "seq 128, batch 32": replace(t, pretrain_seq_len=128, pretrain_batch_size=32),
    }
    precisions = [False, True] if cpu_supports_bf16() else [False]
    rates: dict[tuple[str, bool], list[float]] = {(s, p): [] for s in shapes for p in precisions}
    for r in range(args.rounds):
        order = precisions if r % 2 == 0 else precisions[::-1]
        for name, shape in shapes.items():
            for bf16 in order:
                rates[(name, bf16)] += _tokens_per_s(shape, bf16, args.steps, t.vocab_size)
        for bf16 in order:  # the configured shape again, compiled: its eager rows are this round's baseline
            rates.setdefault(("configured, compiled", bf16), [])
            rates[("configured, compiled", bf16)] += _tokens_per_s(t, bf16, args.steps, t.vocab_size, compiled=True)
    shapes["configured, compiled"] = t
    rows = []
    base = statistics.median(rates[("configured (256 x 4)", False)])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 native: {cpu_supports_bf16()}")
    print(f"{'shape':24} {'precision':13} {'tokens/s':>9} {'vs fp32 same shape':>19} {'vs configured fp32':>19}")
    for name in shapes:
        fp32 = statistics.median(rates[("configured (256 x 4)" if "compiled" in name else name, False)])
        for bf16 in precisions:
            med = statistics.median(rates[(name, bf16)])
            rows.append({"shape": name, "precision": "bf16 autocast" if bf16 else "float32", "tokens_per_s": med,
                         "ratio_vs_fp32_same_shape": med / fp32, "ratio_vs_configured_fp32": med / base,
                         "samples": len(rates[(name, bf16)])})
            print(f"{name:24} {rows[-1]['precision']:13} {med:9.0f} {med / fp32:19.2f} {med / base:19.2f}")
    args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "bf16_native": cpu_supports_bf16(),
                                    "steps_per_round": args.steps, "rounds": args.rounds, "rows": rows},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
