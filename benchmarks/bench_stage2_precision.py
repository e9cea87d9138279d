"""Stage 2's training step in float32 against bf16 autocast, measured in one run: rounds alternate the
order, both precisions train on the same batches, and each figure is a ratio against this run's own
float32 median. Pre-training runs under bf16 autocast (1.6x here, ``bench_pretrain.py``); this says
whether stage 2 would gain as much. Here it did not (x1.09, ``reports/bench_stage2_precision.json``):
its steps are small (LoRA on a 5M model, one answer position per text), so stage 2 stays float32.

The step is stage 2's (``tasks.train.run_stage2``): the shared-prefix forward of ``chintox.prefix`` on a
batch of ToxiCN train texts after the configured prompt, the answer-token loss, backward through the LoRA
adapter and the trainable embedding/LM-head copies, AdamW update, on the base that ``dvc repro base``
built (``<paths.models>/base``). Texts are drawn in a seeded order, the same for both precisions.

    .venv/bin/python benchmarks/bench_stage2_precision.py [--steps 20] [--rounds 3] [--out reports/bench_stage2_precision.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _texts_per_s(cfg, records: list[dict], bf16: bool, steps: int) -> list[float]:
    import torch

    from chintox.modeling import load_model, load_tokenizer
    from chintox.prefix import answer_logits
    from chintox.prompting import prompt_from_config
    from chintox.training.stage2 import Stage2Data, answer_loss
    from tasks.train import _peft_model

    sc = cfg.train.stage2
    base = str(Path(cfg.paths.models) / "base")
    torch.manual_seed(0)
    tok = load_tokenizer(base)
    model = _peft_model(load_model(base, dtype="float32", device="cpu"), sc)
    data = Stage2Data(tok, prompt_from_config(cfg), records, sc.max_seq_len)
    prefix = torch.tensor(data.prefix_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=sc.lr)
    model.train()
    rates = []
    for i in range(steps + 1):
        idx = list(range(i * sc.batch_size, (i + 1) * sc.batch_size))
        t = time.perf_counter()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
            ids, lengths, y = data.batch(idx)
            loss = answer_loss(answer_logits(model, prefix, ids, lengths), y, data.pos_id, data.neg_id, sc.loss)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up kernels and allocations
            rates.append(len(idx) / (time.perf_counter() - t))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per precision per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench_stage2_precision.json")
    args = ap.parse_args()

    import torch

    from chintox.config import load_config
    from chintox.modeling import cpu_supports_bf16
    from chintox.splits import load_split

    cfg = load_config(REPO / "params.yaml", profile=args.profile)
    if not (Path(cfg.paths.models) / "base").is_dir():
        sys.exit(f"no base at {Path(cfg.paths.models) / 'base'}: run `dvc repro base` first")
    if not cpu_supports_bf16():
        sys.exit("this CPU has no native bfloat16 (AVX-512 BF16 / AMX): train.stage2.precision bf16 runs float32")
    records = load_split(cfg.data.out_dir, "toxicn_train")
    random.Random(0).shuffle(records)
    records = records[: (args.steps + 1) * cfg.train.stage2.batch_size]
    rates: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.rounds):
        for bf16 in ((False, True) if r % 2 == 0 else (True, False)):
            rates[bf16] += _texts_per_s(cfg, records, bf16, args.steps)
    fp32 = statistics.median(rates[False])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; stage 2 step, batch "
          f"{cfg.train.stage2.batch_size}, LoRA r {cfg.train.stage2.lora_r}, profile {args.profile}")
    rows = []
    for bf16, label in ((False, "float32"), (True, "bf16 autocast")):
        med = statistics.median(rates[bf16])
        rows.append({"precision": label, "texts_per_s": med, "min": min(rates[bf16]), "max": max(rates[bf16]),
                     "ratio_vs_fp32": med / fp32, "samples": len(rates[bf16])})
        print(f"{label:14} {med:7.1f} texts/s (min {min(rates[bf16]):.1f}, max {max(rates[bf16]):.1f})"
              f"   x{med / fp32:.2f} vs float32")
    args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "steps_per_round": args.steps,
                                    "rounds": args.rounds, "profile": args.profile, "rows": rows},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
