"""An explicit, resumable LoRA training loop (no HF Trainer), shared by stage 1 and stage 2.

Why hand-written: resume must be exact. The loop owns every piece of state that decides the next
update -- trainable weights, optimizer, scheduler, RNG states, epoch, step within the epoch and the
seed of the epoch's data permutation -- and checkpoints all of it (``chintox.training.checkpoint``).
A run killed at any point and started again replays the same batches with the same dropout masks,
so it ends with the same weights and validation metrics as an uninterrupted run (bit-for-bit on CPU,
where kernels are deterministic).

``accelerate`` is used only for what also works single-process on CPU: device placement, bf16
autocast, the process rank/world size and the main-process check. Gradients of the (small) trainable
set are averaged across processes explicitly after backward, so the forward can be the shared-prefix
path of ``chintox.prefix`` rather than a DDP-wrapped call; ``accelerate launch -m chintox.cli stage2``
therefore trains data-parallel with the same code.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from chintox.training.checkpoint import CheckpointManager, rng_state, set_rng_state

log = logging.getLogger("chintox.train")


class TrainingInterrupted(SystemExit):
    """Raised after a SIGTERM was honoured: the checkpoint is written, the process exits non-zero."""

    def __init__(self, ckpt: Any):
        super().__init__(143)
        self.ckpt = ckpt


@dataclass
class LoopSpec:
    """What the loop needs from a stage, independent of what the stage trains on."""

    n_examples: int
    batch_size: int
    grad_accum: int
    epochs: int
    lr: float
    warmup_ratio: float
    weight_decay: float
    save_every_steps: int
    seed: int
    loss_fn: Callable[[Any, list[int]], tuple[torch.Tensor, int]]  # (model, indices) -> (loss, tokens)
    evaluate: Callable[[Any], dict[str, float]] | None = None  # model -> val metrics, each epoch end
    select_metric: str | None = None  # higher is better; "loss" means lower is better
    log_metrics: Callable[[dict[str, float], int], None] = lambda m, s: None
    desc: str = "train"
    history: list[dict[str, Any]] = field(default_factory=list)
    lengths: list[int] | None = None  # per-example size; when given, batches are grouped by length


def epoch_order(n: int, seed: int, batch_size: int, lengths: list[int] | None = None,
                group: int = 50) -> torch.Tensor:
    """The order of the examples in one epoch, a pure function of ``seed`` (so resume replays it).

    Without ``lengths``: a random permutation. With them: the permutation is cut into chunks of
    ``group`` batches, each chunk sorted by length, cut into batches, and the full batches shuffled
    (a partial batch stays last, where the loop drops it). Padding then follows the batch's own
    texts instead of the longest text of a random batch.
    """
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    if lengths is None:
        return perm
    mega = batch_size * group
    flat: list[int] = []
    for i in range(0, n, mega):
        flat += sorted(perm[i: i + mega].tolist(), key=lambda j: -lengths[j])
    batches = [flat[i: i + batch_size] for i in range(0, n, batch_size)]
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    order = torch.randperm(len(batches), generator=g).tolist()
    return torch.tensor([j for b in [batches[k] for k in order] + tail for j in b], dtype=torch.long)


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The weights that training changes (adapter + modules_to_save copies), detached on CPU."""
    return {n: p.detach().to("cpu").clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint weights not in the model: {missing[:3]}...")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return f


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric == "loss" else new > old


def run_loop(model: Any, spec: LoopSpec, ckpts: CheckpointManager, accelerator: Any) -> dict[str, Any]:
    """Train ``model`` (its trainable parameters) per ``spec``, resuming from ``ckpts`` if possible.

    Returns ``{"best": {"epoch", "metrics"}, "best_state": trainable weights of the kept epoch,
    "history": per-epoch metrics, "resumed_from": checkpoint name or None}``. The kept epoch is the
    best on ``spec.select_metric`` (validation set) or the last epoch when there is no evaluation.
    """
    from tqdm.auto import tqdm

    world, rank = accelerator.num_processes, accelerator.process_index
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    per_step = spec.batch_size * spec.grad_accum * world
    steps_per_epoch = max(1, spec.n_examples // per_step)  # incomplete last batch dropped: fixed shapes
    total = steps_per_epoch * spec.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, int(spec.warmup_ratio * total)))

    epoch, step_in_epoch, global_step = 0, 0, 0
    best: dict[str, Any] = {"epoch": None, "metrics": None, "value": None}
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = []
    ckpts.check_config()
    found = ckpts.latest()
    resumed_from = None
    if found is not None:
        path, state, tensors = found
        load_trainable_state(model, tensors["trainable"])
        opt.load_state_dict(tensors["optimizer"])
        sched.load_state_dict(tensors["scheduler"])
        set_rng_state(tensors["rng"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        best, history = state["best"], state["history"]
        best_state = tensors.get("best")
        resumed_from = path.name
        log.warning("resuming %s from checkpoint %s (epoch %d, step %d of %d)",
                    spec.desc, path, epoch, step_in_epoch, steps_per_epoch)

    stop = {"flag": False}
    prev_handler = None
    if threading_main():
        prev_handler = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))

    def save() -> Any:
        if not accelerator.is_main_process:
            return None
        state = {"epoch": epoch, "step_in_epoch": step_in_epoch, "perm_seed": spec.seed + epoch,
                 "best": best, "history": history, "steps_per_epoch": steps_per_epoch}
        tensors = {"trainable": trainable_state(model), "optimizer": opt.state_dict(),
                   "scheduler": sched.state_dict(), "rng": rng_state()}
        if best_state is not None:
            tensors["best"] = best_state
        return ckpts.save(global_step, state, tensors)

    try:
        while epoch < spec.epochs:
            perm = epoch_order(spec.n_examples, spec.seed + epoch, spec.batch_size, spec.lengths)
            model.train()
            bar = tqdm(total=steps_per_epoch, initial=step_in_epoch, desc=f"{spec.desc} epoch {epoch + 1}",
                       unit="step", disable=not accelerator.is_main_process)
            t0, tokens = time.time(), 0
            while step_in_epoch < steps_per_epoch:
                base = step_in_epoch * per_step
                loss_sum = 0.0
                for micro in range(spec.grad_accum):
                    start = base + (micro * world + rank) * spec.batch_size
                    idx = perm[start: start + spec.batch_size].tolist()
                    with accelerator.autocast():
                        loss, ntok = spec.loss_fn(model, idx)
                    (loss / spec.grad_accum).backward()
                    loss_sum += float(loss.detach()) / spec.grad_accum
                    tokens += ntok
                if world > 1:
                    for p in params:
                        if p.grad is not None:
                            torch.distributed.all_reduce(p.grad)
                            p.grad /= world
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step_in_epoch += 1
                global_step += 1
                elapsed = max(time.time() - t0, 1e-9)
                spec.log_metrics({"train_loss": loss_sum, "lr": sched.get_last_lr()[0],
                                  "tokens_per_s": tokens * world / elapsed}, global_step)
                bar.set_postfix(loss=f"{loss_sum:.4f}")
                bar.update(1)
                if stop["flag"]:
                    ck = save()
                    log.warning("SIGTERM: checkpoint %s written at epoch %d step %d; exiting",
                                ck, epoch, step_in_epoch)
                    raise TrainingInterrupted(ck)
                if spec.save_every_steps and global_step % spec.save_every_steps == 0 \
                        and step_in_epoch < steps_per_epoch:
                    save()
            bar.close()
            metrics = spec.evaluate(model) if spec.evaluate is not None else {}
            entry = {"epoch": epoch + 1, **metrics}
            history.append(entry)
            spec.log_metrics({f"val_{k}": v for k, v in metrics.items()}, global_step)
            if spec.select_metric and spec.select_metric in metrics:
                value = metrics[spec.select_metric]
            else:
                value = None
            if value is None or _better(spec.select_metric, value, best["value"]):
                best = {"epoch": epoch + 1, "metrics": metrics, "value": value}
                best_state = trainable_state(model)
            epoch += 1
            step_in_epoch = 0
            save()  # epoch boundary: the evaluation is not repeated on resume
    finally:
        if prev_handler is not None:
            signal.signal(signal.SIGTERM, prev_handler)
    return {"best": best, "best_state": best_state, "history": history, "resumed_from": resumed_from,
            "steps_per_epoch": steps_per_epoch, "global_step": global_step}


class SingleProcess:
    """What :func:`run_loop` uses of an ``accelerate.Accelerator``, for one process on one device.

    ``Accelerator`` initialises process-wide state that a later ``Accelerator`` with another
    ``mixed_precision`` refuses to change; the base step's pre-training (bf16 autocast) runs in the same
    process as stage 1 and 2 in tests and in-process callers, so it uses this instead.
    """

    num_processes = 1
    process_index = 0
    is_main_process = True

    def __init__(self, device: str, bf16: bool):
        self.device = torch.device(device)
        self.bf16 = bf16

    def autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
