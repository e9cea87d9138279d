"""The paper recipe on the ``rehearsal`` base at Qwen1.5-0.5B's shape: stage-2 training with and without
gradient checkpointing, and vLLM scoring of the detector as merged weights vs a LoRA request.

    .venv/bin/python benchmarks/bench_rehearsal.py [--layers 24] [--steps 4] [--n-texts 128] [--quick]

The model is ``tasks.base_model.build_rehearsal_base`` (Qwen's tokenizer and chat template, random
weights) at Qwen1.5-0.5B's shape: hidden 1024, 16 heads, 16 KV heads, intermediate 2816, vocabulary
151,936, tied embeddings; ``--layers`` sets the depth (Qwen1.5-0.5B: 24). Everything else is the
``rehearsal`` profile's stage 2: the study's prompt, LoRA r=16 on all projections without
``modules_to_save``, ``model.dtype`` bfloat16 (float32 where the CPU lacks it), pair loss, AdamW.

Training. Each arm runs in its own process: load the base as stage 2 does (``tasks.train._load_upstream``),
wrap it with ``tasks.train._peft_model``, then one warm-up step and ``--steps`` timed steps of stage 2's
loss (``Stage2Data`` + ``chintox.prefix.answer_logits`` + ``answer_loss``, clip 1.0, AdamW step), the same
batches of ToxiCN train texts in every arm (grouped by length as run_loop groups them). The arms' processes
run side by side in lockstep, one step of one arm at a time in rotating order, so a change in the machine's
load falls on all arms alike; each uses ``--threads`` threads (1: with 2, a thread waiting on a descheduled
sibling spins, and a busy machine then slowed steps up to 10x, differently per arm). steps/s is wall time;
the process's CPU seconds per step are reported beside it. Peak memory is the process's peak RSS during
the steps above its RSS once the model is loaded (the kernel's high-water mark is reset there), i.e.
activations, gradients and optimizer state. Arms:
  gc         gradient checkpointing on (the recipe). The shared-prefix forward cannot keep the prompt's
             keys/values through checkpointed layers, so ``answer_logits`` runs prompt + text per row.
  nogc       checkpointing off, the same code: the prompt runs once per batch (shared prefix).
  nogc_full  checkpointing off, prompt + text per row (``full_answer_logits``): checkpointing's own cost,
             with the same tokens computed as ``gc``.

Scoring. A detector is made from the base: ``--detector-steps`` stage-2 steps on its LoRA (so the adapter
moves the scores; the hf backend's shift vs the bare base is reported), its adapter and merged weights
saved as run_stage2 saves them. ``chintox.scoring.vllm_backend.VLLMScorer`` then scores the same
``--n-texts`` ToxiCN test texts, each mode in its own process: ``merged`` (the merged folder) and ``lora``
(the base + a LoRARequest, ``max_lora_rank`` 16), prefix caching on, the prefix cache reset before each
timed repeat. samples/s exclude start-up, which is reported on its own.

Only ratios within one run mean anything (the machine is shared); results: printed and written to
``--out`` (default reports/bench_rehearsal.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "datasets"

QWEN05B = {"hidden_size": 1024, "num_heads": 16, "num_kv_heads": 16, "intermediate_size": 2816,
           "vocab_size": 151936, "tie_word_embeddings": True}
QUICK = {"hidden_size": 64, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 128,
         "vocab_size": 151936, "tie_word_embeddings": True}
TRAIN_ARMS = ("gc", "nogc", "nogc_full")
VLLM_MODES = ("merged", "lora")
POOL = 800  # ToxiCN train texts that batches are drawn from (50 batches of 16, run_loop's length group)
HF_SCORES = "hf_scores.json"
STEP_TAG = "@@bench "


# ----------------------------------------------------------------------------- set-up


def shape_of(args: argparse.Namespace) -> dict[str, Any]:
    return {**(QUICK if args.quick else QWEN05B), "num_layers": args.layers}


def bench_config(args: argparse.Namespace) -> Any:
    from chintox.config import load_config

    work = args.work.resolve()
    over: dict[str, Any] = {
        "data.out_dir": str(work / "data"), "paths.models": str(work / "models"),
        "paths.reports": str(work / "reports"), "paths.checkpoints": str(work / "checkpoints"),
        "mlflow.tracking_uri": f"sqlite:///{work / 'mlruns' / 'mlflow.db'}",
        "model.prompt_file": str(REPO / "prompts" / "gao_study_zh.txt"),
        "model.rehearsal.imitates": "Qwen/Qwen1.5-0.5B-Chat",  # same tokenizer and template as 1.8B's
    }
    over.update({f"model.rehearsal.{k}": v for k, v in shape_of(args).items()})
    if args.batch_size:
        over["train.stage2.batch_size"] = args.batch_size
    return load_config(REPO / "params.yaml", profile="rehearsal", overrides=over)


def toxicn_records(name: str, n: int, seed: int) -> list[dict]:
    """``n`` ToxiCN records of train.json or test.json (read only), or synthetic Chinese texts when the
    data sets are not beside the project."""
    f = SHARED / "toxicn" / f"{name}.json"
    if f.is_file():
        rows = [{"text": r["content"].strip(), "label": int(r["toxic"])}
                for r in json.loads(f.read_text(encoding="utf-8"))]
    else:
        words = ["今天", "天气", "真的", "很好", "这种人", "不配", "说话", "我们", "一起", "讨论", "这个", "问题"]
        gen = random.Random(seed + 1)
        rows = [{"text": "".join(gen.choices(words, k=gen.randint(5, 30))), "label": i % 2} for i in range(4 * n)]
    return random.Random(seed).sample(rows, min(n, len(rows)))


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM, ru_maxrss) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return rss_kib("VmHWM") <= rss_kib("VmRSS") + 1024


def loaded_stage2(cfg: Any, base: Path, gradient_checkpointing: bool) -> tuple[Any, Any, Any, Any]:
    """(tokenizer, peft model, stage-2 config, accelerator) as run_stage2 sets them up."""
    import torch

    from tasks.train import _accelerator, _load_upstream, _peft_model

    sc = dataclasses.replace(cfg.train.stage2, gradient_checkpointing=gradient_checkpointing)
    accelerator = _accelerator(cfg)
    torch.manual_seed(cfg.data.seed)
    tok, model = _load_upstream(cfg, str(base), accelerator)
    return tok, _peft_model(model, sc), sc, accelerator


def stage2_steps(pm: Any, data: Any, sc: Any, accelerator: Any, batches: list[list[int]], full: bool = False):
    """Yield (wall seconds, CPU seconds of this process, loss, suffix width) per stage-2 optimizer step."""
    import torch

    from chintox.prefix import answer_logits, full_answer_logits
    from chintox.training.stage2 import answer_loss

    forward = full_answer_logits if full else answer_logits
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=sc.lr, weight_decay=sc.weight_decay)
    prefix = torch.tensor(data.prefix_ids)
    pm.train()
    for idx in batches:
        t, c = time.perf_counter(), time.process_time()
        ids, lengths, y = data.batch(idx)
        with accelerator.autocast():
            loss = answer_loss(forward(pm, prefix, ids, lengths), y, data.pos_id, data.neg_id, sc.loss)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        yield time.perf_counter() - t, time.process_time() - c, float(loss.detach()), int(ids.shape[1])


def train_batches(data: Any, sc: Any, n_steps: int, seed: int) -> list[list[int]]:
    """The first ``n_steps`` batches of an epoch over ``data``, grouped by length as run_loop groups them."""
    from chintox.training.loop import epoch_order

    order = epoch_order(len(data.texts), seed, sc.batch_size, [len(t) for t in data.texts]).tolist()
    return [order[i * sc.batch_size: (i + 1) * sc.batch_size] for i in range(n_steps)]


# ----------------------------------------------------------------------------- child processes


def child_build(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """The base (cached per shape), then a detector: a few stage-2 steps, adapter + merged weights."""
    from chintox.prompting import prompt_from_config
    from chintox.training.stage2 import Stage2Data, score_texts
    from tasks.base_model import build_rehearsal_base
    from tasks.train import _save_merged

    work = args.work.resolve()
    base, det = work / "base", work / "detector"
    marker = base / "bench_shape.json"
    t = time.perf_counter()
    if not (marker.is_file() and json.loads(marker.read_text()) == shape_of(args)):
        info = build_rehearsal_base(cfg, base)
        marker.write_text(json.dumps(shape_of(args)))
        (base / "bench_build_info.json").write_text(json.dumps(info))
    out: dict[str, Any] = {"base_build_s": time.perf_counter() - t,
                           **json.loads((base / "bench_build_info.json").read_text())}
    tok, pm, sc, accelerator = loaded_stage2(cfg, base, gradient_checkpointing=False)
    prompt = prompt_from_config(cfg)
    sc = dataclasses.replace(sc, lr=args.detector_lr)
    train = Stage2Data(tok, prompt, toxicn_records("train", POOL, 1), sc.max_seq_len)
    losses = [loss for _, _, loss, _ in stage2_steps(pm, train, sc, accelerator,
                                                   train_batches(train, sc, args.detector_steps, 1))]
    # the hf backend's scores of the texts vLLM scores, with the adapter and without: the modes compared
    # must differ from the bare base, or "merged vs LoRA" would compare two copies of it
    check = Stage2Data(tok, prompt, toxicn_records("test", args.n_texts, 2), sc.max_seq_len)
    hf = {"adapter": score_texts(pm, check, 32)[0]}
    with pm.disable_adapter():
        hf["bare"] = score_texts(pm, check, 32)[0]
    det.mkdir(parents=True, exist_ok=True)
    (det / HF_SCORES).write_text(json.dumps(hf))
    pm.peft_config["default"].base_model_name_or_path = str(base)
    pm.save_pretrained(det / "adapter")
    _save_merged(pm, tok, det / "merged")
    out.update({"detector_steps": args.detector_steps, "detector_lr": sc.lr, "detector_losses": losses,
                "dtype": str(next(p.dtype for p in pm.parameters() if not p.requires_grad)).replace("torch.", ""),
                "prompt_prefix_tokens": len(train.prefix_ids)})
    return out


def child_train(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    import torch

    from chintox.prompting import prompt_from_config
    from chintox.training.stage2 import Stage2Data

    tok, pm, sc, accelerator = loaded_stage2(cfg, args.work.resolve() / "base", args.arm == "gc")
    n = 1 + args.steps
    data = Stage2Data(tok, prompt_from_config(cfg), toxicn_records("train", POOL, 0), sc.max_seq_len)
    rss_loaded = rss_kib()
    reset_ok = reset_peak_rss()
    gen = stage2_steps(pm, data, sc, accelerator, train_batches(data, sc, n, cfg.data.seed),
                       full=args.arm == "nogc_full")
    steps: list[tuple] = []
    print(STEP_TAG + "ready", flush=True)
    for line in sys.stdin:  # lockstep: the parent says when to take each step, so the arms interleave
        if line.strip() != "step":
            break
        steps.append(next(gen))
        print(STEP_TAG + json.dumps(steps[-1]), flush=True)
    timed, cpu = [s[0] for s in steps[1:]], [s[1] for s in steps[1:]]
    p, widths = len(data.prefix_ids), [s[3] for s in steps]
    full = args.arm != "nogc"
    return {
        "gradient_checkpointing": args.arm == "gc", "forward": "prompt + text per row" if full else "shared prefix",
        "steps_per_s": len(timed) / sum(timed), "step_s": timed, "warmup_step_s": steps[0][0],
        "cpu_s_per_step": sum(cpu) / len(cpu), "step_cpu_s": cpu, "losses": [s[2] for s in steps],
        "tokens_per_step": [sc.batch_size * (p + w) if full else p + sc.batch_size * w for w in widths],
        "suffix_widths": widths, "rss_loaded_gib": rss_loaded / 2**20,
        "peak_above_loaded_gib": (rss_kib("VmHWM") - rss_loaded) / 2**20, "peak_reset_ok": reset_ok,
        "threads": torch.get_num_threads(), "dtype": str(next(pm.parameters()).dtype).replace("torch.", ""),
    }


def child_vllm(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    from chintox.modeling import resolve_dtype
    from chintox.prompting import prompt_from_config
    from chintox.scoring import VLLM_LORA_RANKS
    from chintox.scoring.vllm_backend import VLLMScorer

    work, ev, sc = args.work.resolve(), cfg.evaluate, cfg.train.stage2
    kw: dict[str, Any] = {"prompt": prompt_from_config(cfg), "max_model_len": ev.max_model_len,
                          "dtype": resolve_dtype(cfg.model.dtype, "cpu")[0], "block_size": ev.vllm_block_size,
                          "prefix_caching": True, "kvcache_gb": ev.vllm_kvcache_gb, "progress": False}
    if args.mode == "lora":
        kw.update(lora_adapter=work / "detector" / "adapter",
                  max_lora_rank=next(r for r in VLLM_LORA_RANKS if r >= sc.lora_r))
        model = work / "base"
    else:
        model = work / "detector" / "merged"
    texts = [r["text"] for r in toxicn_records("test", args.n_texts, 2)]
    t = time.perf_counter()
    scorer = VLLMScorer(model, **kw)
    startup = time.perf_counter() - t
    rss_loaded = rss_kib()
    reset_peak_rss()
    best, scores = float("inf"), None
    for _ in range(args.repeats):
        scorer.reset_prefix_cache()
        t = time.perf_counter()
        scores = scorer.score(texts)
        best = min(best, time.perf_counter() - t)
    out = {"samples_per_s": len(texts) / best, "startup_s": startup, "n": len(texts), "repeats": args.repeats,
           "dtype": kw["dtype"], "max_lora_rank": kw.get("max_lora_rank"),
           "rss_loaded_gib": rss_loaded / 2**20, "peak_above_loaded_gib": (rss_kib("VmHWM") - rss_loaded) / 2**20,
           "truncated": scorer.stats.truncated, "scores": [float(s) for s in scores]}
    scorer.close()
    return out


# ----------------------------------------------------------------------------- parent


class Child:
    """This script as ``--child role`` in a fresh process (``--threads`` threads). Training arms also talk
    on stdin/stdout: ``step`` takes one step and answers a ``STEP_TAG`` line."""

    def __init__(self, args: argparse.Namespace, role: str, extra: list[str]):
        self.label = " ".join([role, *extra])
        self.result = args.work.resolve() / f"result_{role}_{'_'.join(extra)}.json".replace("--", "")
        self.result.unlink(missing_ok=True)
        self.log = self.result.with_suffix(".log")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", role, "--result", str(self.result), *extra]
        self.t, self.load = time.perf_counter(), os.getloadavg()[0]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         text=True, env=env)
        self.timeout = args.timeout

    def ask(self, line: str | None = None) -> str | None:
        """Send ``line`` (if any) and return the child's next tagged answer; None when it has died."""
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        for out in self.proc.stdout:
            if out.startswith(STEP_TAG):
                return out[len(STEP_TAG):].strip()
        return None

    def finish(self) -> dict[str, Any]:
        try:
            self.proc.communicate("done\n", timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return {"error": f"timed out after {self.timeout}s"}
        if self.proc.returncode != 0 or not self.result.is_file():
            tail = self.log.read_text().strip().splitlines()[-6:]
            return {"error": f"exit {self.proc.returncode}: " + " | ".join(tail)[-800:]}
        res = json.loads(self.result.read_text())
        res["process_wall_s"] = time.perf_counter() - self.t
        res["loadavg_1min"] = [self.load, os.getloadavg()[0]]  # at start and end: other jobs skew wall times
        print(f"  {self.label}: done in {res['process_wall_s']:.0f}s", flush=True)
        return res


def train_lockstep(args: argparse.Namespace) -> dict[str, Any]:
    """The arms' processes side by side, each step taken by one arm at a time, in rotating order, so
    that a change in the machine's load falls on every arm alike."""
    arms = {arm: Child(args, "train", ["--arm", arm]) for arm in TRAIN_ARMS}
    live = [arm for arm in TRAIN_ARMS if arms[arm].ask() == "ready"]
    for k in range(1 + args.steps):
        for arm in live[k % len(live):] + live[: k % len(live)] if live else []:
            if arms[arm].ask("step") is None:
                live.remove(arm)
        print(f"  stage-2 step {k + 1} of {1 + args.steps} taken by {', '.join(live)}", flush=True)
    return {arm: child.finish() for arm, child in arms.items()}


def summarise(res: dict[str, Any], work: Path) -> None:
    import numpy as np

    tr = res.get("train", {})
    if all("steps_per_s" in tr.get(a, {}) for a in TRAIN_ARMS):
        gc, nogc, full = (tr[a] for a in TRAIN_ARMS)
        res["train_ratios"] = {
            "steps_per_s_nogc_over_gc": nogc["steps_per_s"] / gc["steps_per_s"],
            "steps_per_s_nogc_full_over_gc": full["steps_per_s"] / gc["steps_per_s"],
            # CPU seconds per step: less sensitive than wall time to other jobs on a shared machine
            "cpu_s_gc_over_nogc": gc["cpu_s_per_step"] / nogc["cpu_s_per_step"],
            "cpu_s_gc_over_nogc_full": gc["cpu_s_per_step"] / full["cpu_s_per_step"],
            "peak_memory_nogc_over_gc": nogc["peak_above_loaded_gib"] / gc["peak_above_loaded_gib"],
            "peak_memory_nogc_full_over_gc": full["peak_above_loaded_gib"] / gc["peak_above_loaded_gib"],
            "first_loss_max_diff": max(abs(tr[a]["losses"][0] - gc["losses"][0]) for a in TRAIN_ARMS),
        }
    vl = res.get("vllm", {})
    hf_file = work / "detector" / HF_SCORES
    ref = {k: np.array(v) for k, v in json.loads(hf_file.read_text()).items()} if hf_file.is_file() else {}
    if ref:
        res["hf_reference"] = {"adapter_score_shift_max": float(np.abs(ref["adapter"] - ref["bare"]).max()),
                               "adapter_label_flips": int(((ref["adapter"] >= 0.5) != (ref["bare"] >= 0.5)).sum())}
    scores = {m: np.array(vl[m].pop("scores")) for m in VLLM_MODES if "scores" in vl.get(m, {})}
    for m, sc in scores.items():
        vl[m]["score_stats"] = {"mean": float(sc.mean()), "min": float(sc.min()), "max": float(sc.max()),
                                "distinct": len(set(sc.round(6).tolist()))}
        for k, r in ref.items():
            vl[m][f"max_score_diff_vs_hf_{k}"] = float(np.abs(sc - r).max())
    if len(scores) == 2:
        merged, lora = scores["merged"], scores["lora"]
        mid = float(np.median(merged))
        res["vllm_ratios"] = {
            "samples_per_s_merged_over_lora": vl["merged"]["samples_per_s"] / vl["lora"]["samples_per_s"],
            "startup_lora_minus_merged_s": vl["lora"]["startup_s"] - vl["merged"]["startup_s"],
            "label_agreement_at_0.5": float(np.mean((merged >= 0.5) == (lora >= 0.5))),
            # at 0.5 a barely trained detector may call every text one class; a threshold inside the scores
            "label_agreement_at_merged_median": float(np.mean((merged >= mid) == (lora >= mid))),
            "max_score_diff": float(np.abs(merged - lora).max()),
            "mean_score_diff": float(np.abs(merged - lora).mean()),
        }


def print_table(res: dict[str, Any]) -> None:
    print(f"\nshape {res['shape']}, {res['build'].get('parameters', '?')} parameters, batch {res['batch_size']}, "
          f"prompt prefix {res['build'].get('prompt_prefix_tokens', '?')} tokens, {res['machine']}")
    print(f"{'stage-2 arm':<12}{'steps/s':>10}{'CPU s/step':>12}{'tokens/step':>13}{'peak GiB':>10}  note")
    for a, r in res["train"].items():
        if "error" in r:
            print(f"{a:<12} error: {r['error'][:200]}")
        else:
            print(f"{a:<12}{r['steps_per_s']:>10.4f}{r['cpu_s_per_step']:>12.1f}{statistics.mean(r['tokens_per_step']):>13.0f}"
                  f"{r['peak_above_loaded_gib']:>10.2f}  {r['forward']}")
    print(f"{'vLLM mode':<12}{'samples/s':>10}{'startup s':>13}")
    for m, r in res["vllm"].items():
        print(f"{m:<12}" + (f"error: {r['error'][:200]}" if "error" in r else
                            f"{r['samples_per_s']:>10.3f}{r['startup_s']:>13.1f}"))
    for k in ("train_ratios", "vllm_ratios"):
        if k in res:
            print(k, json.dumps({a: round(b, 4) for a, b in res[k].items()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, help="decoder layers (default 24, Qwen1.5-0.5B's; fewer when a "
                    "step is too slow on this machine)")
    ap.add_argument("--steps", type=int, help="timed stage-2 steps per arm, after one warm-up step (default 4)")
    ap.add_argument("--batch-size", type=int, help="stage-2 batch (default: the profile's, 16)")
    ap.add_argument("--n-texts", type=int, help="ToxiCN test texts scored by each vLLM mode (default 128)")
    ap.add_argument("--repeats", type=int, default=1, help="timed vLLM repeats (best kept)")
    ap.add_argument("--detector-steps", type=int, default=2, help="stage-2 steps that make the detector's adapter")
    ap.add_argument("--detector-lr", type=float, default=1e-3)
    ap.add_argument("--skip", default="", help="comma list: train, vllm")
    ap.add_argument("--quick", action="store_true", help="a smoke run: micro shape, 2 layers, 1 step, 16 texts")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "chintox_bench_rehearsal")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "bench_rehearsal.json")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per child process")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenMP threads per process (default 1: on a shared machine, threads that wait "
                         "on a descheduled sibling spin and skew both wall and CPU time)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--arm", choices=TRAIN_ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=VLLM_MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    for key, full, quick in (("layers", 24, 2), ("steps", 4, 1), ("n_texts", 128, 16), ("batch_size", 0, 4)):
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    cfg = bench_config(args)
    if args.child:
        fn = {"build": child_build, "train": child_train, "vllm": child_vllm}[args.child]
        args.result.write_text(json.dumps(fn(args, cfg)))
        return

    import torch

    from chintox.modeling import cpu_supports_bf16

    args.work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    res: dict[str, Any] = {
        "machine": {"cpu_count": os.cpu_count(), "threads_per_process": args.threads, "torch": torch.__version__,
                    "cpu_supports_bf16": cpu_supports_bf16(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "profile": "rehearsal", "shape": shape_of(args), "imitates": "Qwen/Qwen1.5-0.5B" + (
            "" if args.layers == 24 and not args.quick else f" (shape changed: {args.layers} layers"
            + (", micro width" if args.quick else "") + ")"),
        "batch_size": cfg.train.stage2.batch_size, "max_seq_len": cfg.train.stage2.max_seq_len,
        "lora": {"r": cfg.train.stage2.lora_r, "alpha": cfg.train.stage2.lora_alpha,
                 "targets": list(cfg.train.stage2.target_modules),
                 "modules_to_save": list(cfg.train.stage2.modules_to_save)},
        "loss": cfg.train.stage2.loss, "model_dtype": cfg.model.dtype, "timed_steps": args.steps,
        "texts": "ToxiCN train (training) / test (scoring)" if (SHARED / "toxicn").is_dir() else "synthetic",
        "command": " ".join(["benchmarks/bench_rehearsal.py", *sys.argv[1:]]),
        "train": {}, "vllm": {},
    }
    t0 = time.perf_counter()
    print("building the base and the detector ...", flush=True)
    res["build"] = Child(args, "build", []).finish()
    if "error" in res["build"]:
        raise SystemExit(f"build failed: {res['build']['error']}")
    if "train" not in skip:
        res["train"] = train_lockstep(args)
    if "vllm" not in skip:
        for mode in VLLM_MODES:
            res["vllm"][mode] = Child(args, "vllm", ["--mode", mode]).finish()
    res["total_s"] = time.perf_counter() - t0
    summarise(res, args.work.resolve())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print_table(res)
    print(f"written {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
