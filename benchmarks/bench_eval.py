"""Scoring speed, measured in one run on the same model and texts.

    .venv/bin/python benchmarks/bench_eval.py [--model-dir DIR] [--n 200] [--n-generate 60] [--full]

Paths compared (samples/s exclude start-up; start-up reported separately):
  generate   per-sample transformers ``generate`` + parse (the study's non-vLLM path) -- the baseline
  hf         the hf backend: shared-prefix KV once (chintox.prefix), texts batched by length
  vllm       vLLM, prefix caching on, merged weights (the default path)
  vllm_nopc  vLLM, prefix caching off
  vllm_lora  vLLM, prefix caching on, the adapter through a LoRARequest (vs merged weights)
``reset_prefix_cache()`` is called before every timed vLLM repeat, so cached blocks never carry over.
``--full`` then times the whole ToxiCN test + COLD test evaluation (7,734 texts) with the default path,
start-up included (fresh engine). Without ``--model-dir`` a random-weight model of the ``tiny`` profile
is built over the pipeline's own tokenizer (``models/base``, ``--tokenizer-from``), or, when that is not
built yet or ``--prompt-copies`` is given, a tokenizer trained on ToxiCN + COLD train texts, with
``model.tiny.tokenizer_prompt_copies`` copies of the instruction: 0 by default, a ~200-token prompt like
the study's with Qwen's tokenizer; ``--prompt-copies 50`` lets BPE memorise it, ~80 tokens), or, with
``--qwen-tiktoken``, over Qwen's own vocabulary and chat template (chintox/qwen_tokenizer.py: 151,646
tokens, so a 39M-parameter model; the study's prompt is then 178 + 5 tokens, exactly as Qwen1.5's);
speed does not depend on the weights. A random LoRA adapter (r=16, all projections) is made for the LoRA
comparison and merged for the merged-weights path. Results: printed and written as JSON (--out).
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
SHARED = REPO.parent / "shared" / "datasets"


def load_eval_texts() -> tuple[list[str], list[str]]:
    import csv

    toxicn = [r["content"] for r in json.loads((SHARED / "toxicn" / "test.json").read_text(encoding="utf-8"))]
    with (SHARED / "cold" / "test.csv").open(encoding="utf-8-sig") as f:
        cold = [r["TEXT"] for r in csv.DictReader(f)]
    return toxicn, cold


def training_corpus(max_chars: int) -> list[str]:
    import csv

    texts = [r["content"] for r in json.loads((SHARED / "toxicn" / "train.json").read_text(encoding="utf-8"))]
    with (SHARED / "cold" / "train.csv").open(encoding="utf-8-sig") as f:
        texts += [r["TEXT"] for r in csv.DictReader(f)]
    out, total = [], 0
    for t in texts:
        out.append(t)
        total += len(t)
        if total >= max_chars:
            break
    return out


def build_models(cfg, root: Path, tok) -> tuple[Path, Path, Path]:
    """(base dir, LoRA adapter dir, merged dir) with random weights, tiny-profile shapes, over ``tok``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tasks.base_model import build_tiny_model

    base, adapter, merged = root / "base", root / "adapter", root / "merged"
    if (merged / "config.json").is_file():
        return base, adapter, merged
    model = build_tiny_model(cfg.model.tiny, tok, seed=0)
    model.save_pretrained(base)
    tok.save_pretrained(base)
    s2 = cfg.train.stage2
    lcfg = LoraConfig(r=s2.lora_r, lora_alpha=s2.lora_alpha, target_modules=list(s2.target_modules),
                      lora_dropout=0.0, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lcfg)
    torch.manual_seed(1)
    with torch.no_grad():  # a non-trivial adapter (B is zero at init)
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    peft_model.save_pretrained(adapter)
    peft_model.merge_and_unload().save_pretrained(merged)
    tok.save_pretrained(merged)
    return base, adapter, merged


def timed(fn, repeats: int, before=None) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        if before:
            before()
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, help="HF model folder (default: build a random tiny model)")
    ap.add_argument("--adapter", type=Path, help="LoRA adapter over --model-dir (for the LoRA comparison)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/chintox_bench"))
    ap.add_argument("--n", type=int, default=200, help="texts for the path comparison")
    ap.add_argument("--n-generate", type=int, default=60, help="texts for the slow per-sample baseline")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="also time ToxiCN test + COLD test end to end")
    ap.add_argument("--skip-lora", action="store_true")
    ap.add_argument("--prompt-copies", type=int, default=None,
                    help="copies of the instruction in the tokenizer corpus (default: params.yaml "
                         "model.tiny.tokenizer_prompt_copies = 0, a ~200-token prompt like the study's; "
                         "50 lets BPE memorise the prompt, ~80 tokens)")
    ap.add_argument("--tokenizer-from", type=Path, default=REPO / "models" / "base",
                    help="take the tokenizer of this model folder (default: the pipeline's own, models/base, "
                         "when `dvc repro base` has run; else one is trained as tasks/base_model.py does)")
    ap.add_argument("--qwen-tiktoken", type=Path,
                    help="use Qwen's own vocabulary and chat template (qwen.tiktoken, see "
                         "chintox/qwen_tokenizer.py): the study's prompt exactly as Qwen1.5 tokenizes it")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="params.yaml override, e.g. model.tiny.hidden_size=1024 for a bigger random model")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench_eval.json")
    args = ap.parse_args()

    import numpy as np
    import torch

    from chintox.config import load_config, parse_override
    from chintox.prompting import prompt_from_config
    from chintox.scoring.hf import HFScorer
    from chintox.scoring.vllm_backend import VLLMScorer

    overrides = {"model.prompt_file": str(REPO / "prompts" / "toxicity_zh.txt")}
    if args.prompt_copies is not None:
        overrides["model.tiny.tokenizer_prompt_copies"] = args.prompt_copies
    overrides.update(parse_override(x) for x in args.sets)
    cfg = load_config(REPO / "params.yaml", profile="tiny", overrides=overrides)
    ev = cfg.evaluate
    prompt = prompt_from_config(cfg)
    args.work.mkdir(parents=True, exist_ok=True)
    res_tokenizer = "model's own"
    if args.model_dir:
        merged, adapter, base = args.model_dir, args.adapter, args.model_dir
    else:
        t = time.perf_counter()
        if args.qwen_tiktoken:
            from chintox.qwen_tokenizer import qwen_tokenizer

            work, tok = args.work / "qwen_vocab", qwen_tokenizer(args.qwen_tiktoken)
            res_tokenizer = f"qwen ({args.qwen_tiktoken})"
        elif args.prompt_copies is None and (args.tokenizer_from / "tokenizer.json").is_file():
            from chintox.modeling import load_tokenizer

            work, tok = args.work / "pipeline_tokenizer", load_tokenizer(str(args.tokenizer_from))
            res_tokenizer = str(args.tokenizer_from)
        else:
            from tasks.base_model import tiny_tokenizer

            work = args.work / f"prompt_copies_{cfg.model.tiny.tokenizer_prompt_copies}"
            tok = tiny_tokenizer(cfg, training_corpus(cfg.model.tiny.tokenizer_max_chars))
            res_tokenizer = f"trained here, {cfg.model.tiny.tokenizer_prompt_copies} prompt copies"
        import hashlib

        # the cached models are reused only with the very same tokenizer and shapes
        key = hashlib.sha256((tok.backend_tokenizer.to_str() + repr(cfg.model.tiny)).encode()).hexdigest()[:10]
        work = work.with_name(f"{work.name}-{key}")
        base, adapter, merged = build_models(cfg, work, tok)
        print(f"built random tiny model + adapter in {time.perf_counter() - t:.0f}s under {args.work}")
    toxicn, cold = load_eval_texts()
    texts = (toxicn + cold)[:: max(1, (len(toxicn) + len(cold)) // args.n)][: args.n]
    res: dict = {"threads": torch.get_num_threads(), "n": len(texts), "n_generate": args.n_generate,
                 "model": str(merged), "repeats": args.repeats,
                 "tokenizer": res_tokenizer, "overrides": args.sets}
    common = {"max_model_len": ev.max_model_len, "dtype": cfg.model.dtype, "progress": False}

    # transformers: per-sample generate (baseline) and the hf backend
    hf = HFScorer(merged, prompt, batch_size=ev.batch_size, max_new_tokens=ev.generate_max_new_tokens, **common)
    res["parameters"] = sum(p.numel() for p in hf.model.parameters())
    res["prompt_tokens"] = len(hf.encoder.prefix_ids) + len(hf.encoder.suffix_ids)
    res["mean_text_tokens"] = float(np.mean([len(r) for r in hf.encoder.encode(texts)]) - len(hf.encoder.suffix_ids))
    # vLLM caches whole blocks only: the prefix's last (prefix mod block) tokens are recomputed for every
    # text. If cost were proportional to tokens computed, caching could gain at most this much:
    prefix, block = len(hf.encoder.prefix_ids), ev.vllm_block_size
    total = res["prompt_tokens"] + res["mean_text_tokens"]
    res["prefix_tokens"], res["block_size"] = prefix, block
    res["prefix_caching_ceiling"] = total / (total - prefix // block * block)
    sec, (_, gen_scores) = timed(lambda: hf.generate_with_scores(texts[: args.n_generate]), 1)
    res["generate"] = {"samples_per_s": args.n_generate / sec, "startup_s": hf.startup_seconds,
                       "max_new_tokens": ev.generate_max_new_tokens}
    sec, hf_scores = timed(lambda: hf.score(texts), args.repeats)
    res["hf"] = {"samples_per_s": len(texts) / sec, "startup_s": hf.startup_seconds}
    res["generate_vs_hf_max_score_diff"] = float(np.abs(gen_scores - hf_scores[: args.n_generate]).max())
    hf.close()
    print(json.dumps(res, indent=1), flush=True)

    def vllm_run(key: str, model, **kw):
        t = time.perf_counter()
        v = VLLMScorer(model, prompt, block_size=ev.vllm_block_size, kvcache_gb=ev.vllm_kvcache_gb, **common, **kw)
        startup = time.perf_counter() - t
        sec, scores = timed(lambda: v.score(texts), args.repeats, before=v.reset_prefix_cache)
        res[key] = {"samples_per_s": len(texts) / sec, "startup_s": startup,
                    "max_score_diff_vs_hf": float(np.abs(scores - hf_scores).max()),
                    "label_agreement_vs_hf": float(np.mean((scores >= 0.5) == (hf_scores >= 0.5)))}
        print(key, json.dumps(res[key]), flush=True)
        return v

    vllm_run("vllm", merged, prefix_caching=True).close()
    vllm_run("vllm_nopc", merged, prefix_caching=False).close()
    if not args.skip_lora and adapter is not None:
        try:
            vllm_run("vllm_lora", base, prefix_caching=True, lora_adapter=adapter,
                     max_lora_rank=cfg.train.stage2.lora_r).close()
        except Exception as e:  # noqa: BLE001 - report, fall back to merged weights
            res["vllm_lora"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            print("vllm_lora failed:", res["vllm_lora"]["error"], flush=True)

    base_sps = res["generate"]["samples_per_s"]
    res["ratios_vs_generate"] = {k: res[k]["samples_per_s"] / base_sps
                                 for k in ("hf", "vllm", "vllm_nopc", "vllm_lora")
                                 if "samples_per_s" in res.get(k, {})}
    res["vllm_prefix_caching_speedup"] = res["vllm"]["samples_per_s"] / res["vllm_nopc"]["samples_per_s"]
    res["vllm_prefix_caching_share_of_ceiling"] = res["vllm_prefix_caching_speedup"] / res["prefix_caching_ceiling"]
    if "samples_per_s" in res.get("vllm_lora", {}):
        res["vllm_merged_vs_lora"] = res["vllm"]["samples_per_s"] / res["vllm_lora"]["samples_per_s"]

    if args.full:
        all_texts = toxicn + cold
        t = time.perf_counter()
        v = VLLMScorer(merged, prompt, block_size=ev.vllm_block_size, kvcache_gb=ev.vllm_kvcache_gb,
                       prefix_caching=True, max_model_len=ev.max_model_len, dtype=cfg.model.dtype, progress=True)
        startup = time.perf_counter() - t
        v.reset_prefix_cache()
        t1 = time.perf_counter()
        v.score(toxicn)
        v.score(cold)
        scoring = time.perf_counter() - t1
        res["full_eval"] = {"n": len(all_texts), "startup_s": startup, "scoring_s": scoring,
                            "total_s": startup + scoring, "samples_per_s": len(all_texts) / scoring,
                            "truncated": v.stats.truncated, "empty": v.stats.empty}
        v.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
