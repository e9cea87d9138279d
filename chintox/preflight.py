"""Start-up checks: what a configuration needs of this machine, checked before any data is touched.

A setting that only a GPU can honour (``train.device: cuda``, a multi-process ``accelerate launch``)
or a base model this machine cannot reach (a hub id that is neither in the local Hugging Face cache
nor downloadable because the hub is offline) fails here, with every missing thing named at once,
instead of falling back silently or failing an hour later. The training pipeline's commands and the
training flow call :func:`check_pipeline` first.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("chintox.preflight")

RUNBOOK = "README.md, 'Training on a GPU worker'"


class PreflightError(RuntimeError):
    """This machine cannot run this configuration; the message lists what is missing."""


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached_on_hub(model_id: str, revision: str | None) -> bool:
    """True when ``model_id``'s config.json (at ``revision``) is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model_id, "config.json", revision=revision or "main")
    return isinstance(found, str)


def base_model_problem(cfg: Any) -> str | None:
    """Why ``model.base`` cannot be loaded here, or None."""
    from chintox.modeling import _looks_local

    base = cfg.model.base
    if cfg.model.is_built:
        return None
    if _looks_local(base):
        return None if Path(base).expanduser().is_dir() else f"model.base {base!r}: no such folder"
    if _cached_on_hub(base, cfg.model.revision):
        return None
    if _hub_offline():
        return (f"model.base {base!r} (revision {cfg.model.revision or 'main'}) is not in the local Hugging "
                "Face cache and the hub is offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE): download it on a "
                "machine with network access (`hf download " + base + "`) and copy the cache, "
                "or set model.base to a local folder")
    try:  # online mode: is the hub reachable at all? (a short, bounded check)
        from huggingface_hub import HfApi

        HfApi().model_info(base, revision=cfg.model.revision, timeout=10)
    except Exception as e:  # noqa: BLE001 - any failure means "cannot load it from here"
        return f"model.base {base!r} is not cached locally and the hub cannot be reached: {type(e).__name__}: {e}"
    return None


def device_problems(cfg: Any) -> list[str]:
    """Settings that need a CUDA device this machine does not have."""
    import torch

    problems = []
    cuda = torch.cuda.is_available()
    if cfg.train.device == "cuda" and not cuda:
        problems.append(f"train.device is 'cuda' (profile {cfg.profile!r}) but torch {torch.__version__} sees "
                        "no CUDA device here (CPU build, or no GPU)")
    if cfg.evaluate.device == "cuda" and not cuda:
        problems.append("evaluate.device is 'cuda' but torch sees no CUDA device here")
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and not cuda:
        problems.append(f"launched as {world} processes (accelerate launch / torchrun) but there is no CUDA "
                        "device: multi-process training needs one GPU per process")
    elif world > 1 and world > torch.cuda.device_count():
        problems.append(f"launched as {world} processes but only {torch.cuda.device_count()} CUDA devices")
    return problems


def check_pipeline(cfg: Any) -> None:
    """Raise :class:`PreflightError` naming everything this machine lacks for ``cfg``'s pipeline;
    log the dtype the model will run in when it differs from ``model.dtype``."""
    from chintox.modeling import resolve_dtype

    problems = device_problems(cfg)
    base = base_model_problem(cfg)
    if base:
        problems.append(base)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise PreflightError(
            f"profile {cfg.profile!r} cannot run on this machine:\n{listing}\n"
            f"Run it on a GPU worker ({RUNBOOK}), or rehearse it here with --profile rehearsal.")
    import torch

    device = "cuda" if (cfg.train.device != "cpu" and torch.cuda.is_available()) else "cpu"
    dtype, why = resolve_dtype(cfg.model.dtype, device)
    if why:
        log.warning("%s", why)
    else:
        log.info("model dtype %s on %s", dtype, device)


__all__ = ["PreflightError", "base_model_problem", "check_pipeline", "device_problems"]
