"""Scoring backends behind one interface (:class:`Scorer`): ``hf`` (transformers) and ``vllm``.

``make_scorer(model_dir, cfg, backend)`` accepts a trained detector folder (``detector.json`` +
``merged/`` + ``prompt.txt``) or a plain Hugging Face model folder (the untrained base, scored
zero-shot with the prompt named by params). vLLM is imported only by the ``vllm`` backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chintox.modeling import ModelLoadError, resolve_model_ref
from chintox.prompting import Prompt, load_prompt, prompt_from_config
from chintox.scoring.base import EncodeStats, PromptEncoder, Scorer, parse_answer, two_way_score

BACKENDS = ("hf", "vllm")


def resolve_detector(model_dir: str | Path, cfg: Any) -> tuple[str, Prompt, dict[str, Any]]:
    """(model folder to load, prompt, detector.json contents or {}) for a detector or model folder."""
    d = Path(model_dir)
    if not d.exists():
        raise ModelLoadError(f"model folder not found: {d.resolve()}")
    info: dict[str, Any] = {}
    if (d / "detector.json").is_file():
        info = json.loads((d / "detector.json").read_text(encoding="utf-8"))
    merged = d / "merged"
    if merged.is_dir():
        model_path = resolve_model_ref(merged)
    elif info:
        raise ModelLoadError(f"detector folder {d} has no merged/ model folder")
    else:
        model_path = resolve_model_ref(d)
    pos = info.get("answer_positive", cfg.model.answer_positive)
    neg = info.get("answer_negative", cfg.model.answer_negative)
    if (d / "prompt.txt").is_file():
        prompt = load_prompt(d / "prompt.txt", pos, neg)
    else:
        p = prompt_from_config(cfg)
        prompt = Prompt(p.instruction, pos, neg)
    return model_path, prompt, info


def make_scorer(model_dir: str | Path, cfg: Any, backend: str | None = None, *,
                progress: bool = True, **overrides: Any) -> Scorer:
    """A :class:`Scorer` for ``model_dir`` with the ``evaluate:`` settings of ``cfg``.

    ``overrides`` go to the backend's constructor (e.g. ``prefix_caching=False``, ``lora_adapter``).
    """
    backend = backend or cfg.evaluate.backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    model_path, prompt, info = resolve_detector(model_dir, cfg)
    ev = cfg.evaluate
    dtype = info.get("dtype") or cfg.model.dtype
    common = {"max_model_len": ev.max_model_len, "dtype": dtype,
              "max_new_tokens": ev.generate_max_new_tokens,
              "trust_remote_code": cfg.model.trust_remote_code, "progress": progress}
    if backend == "hf":
        from chintox.scoring.hf import HFScorer

        kw = {**common, "batch_size": ev.batch_size}
        kw.update(overrides)
        return HFScorer(model_path, prompt, **kw)
    from chintox.scoring.vllm_backend import VLLMScorer

    kw = {**common, "block_size": ev.vllm_block_size, "prefix_caching": ev.vllm_prefix_caching,
          "kvcache_gb": ev.vllm_kvcache_gb}
    kw.update(overrides)
    return VLLMScorer(model_path, prompt, **kw)


__all__ = [
    "BACKENDS",
    "EncodeStats",
    "PromptEncoder",
    "Scorer",
    "make_scorer",
    "parse_answer",
    "resolve_detector",
    "two_way_score",
]
