"""Scoring backends behind one interface (:class:`Scorer`): ``hf`` (transformers) and ``vllm``.

``make_scorer(model_dir, cfg, backend)`` accepts a trained detector folder (its card ``detector.json``
+ ``merged/`` + ``prompt.txt``) or a plain Hugging Face model folder (the untrained base, scored
zero-shot with the prompt named by params). vLLM is imported only by the ``vllm`` backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chintox.card import DetectorCard
from chintox.modeling import ModelLoadError, resolve_model_ref
from chintox.prompting import Prompt, load_prompt, prompt_from_config
from chintox.scoring.base import EncodeStats, PromptEncoder, Scorer, parse_answer, two_way_score

BACKENDS = ("hf", "vllm")


def resolve_detector(model_dir: str | Path, cfg: Any) -> tuple[str, Prompt, DetectorCard | None]:
    """(model folder to load, prompt, the detector card or None) for a detector or a plain model folder."""
    d = Path(model_dir)
    if not d.exists():
        raise ModelLoadError(f"model folder not found: {d.resolve()}")
    card = DetectorCard.find(d)
    if card is None:  # a plain model folder (the zero-shot base): the prompt named by params
        p = prompt_from_config(cfg)
        return resolve_model_ref(d), Prompt(p.instruction, cfg.model.answer_positive, cfg.model.answer_negative), card
    if not (d / "merged").is_dir():
        raise ModelLoadError(f"detector folder {d} has no merged/ model folder")
    return resolve_model_ref(d / "merged"), load_prompt(d / "prompt.txt", card.answer_positive,
                                                        card.answer_negative), card


def make_scorer(model_dir: str | Path, cfg: Any, backend: str | None = None, *,
                progress: bool = True, **overrides: Any) -> Scorer:
    """A :class:`Scorer` for ``model_dir`` with the ``evaluate:`` settings of ``cfg``.

    A detector is scored in the dtype its card records, a plain model in ``model.dtype``; the window
    is ``evaluate.max_model_len`` (capped by the model), the hf backend runs on ``evaluate.device``.
    ``overrides`` go to the backend's constructor (e.g. ``prefix_caching=False``, ``lora_adapter``).
    """
    backend = backend or cfg.evaluate.backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    model_path, prompt, card = resolve_detector(model_dir, cfg)
    ev = cfg.evaluate
    common = {"max_model_len": ev.max_model_len, "dtype": card.dtype if card else cfg.model.dtype,
              "max_new_tokens": ev.generate_max_new_tokens,
              "trust_remote_code": cfg.model.trust_remote_code, "progress": progress}
    if backend == "hf":
        from chintox.scoring.hf import HFScorer

        kw = {**common, "batch_size": ev.batch_size, "device": ev.device}
        kw.update(overrides)
        return HFScorer(model_path, prompt, **kw)
    from chintox.scoring.vllm_backend import VLLMScorer

    kw = {**common, "block_size": ev.vllm_block_size, "prefix_caching": ev.vllm_prefix_caching,
          "kvcache_gb": ev.vllm_kvcache_gb}
    if ev.vllm_mode == "lora" and card is not None:
        model_path, kw["lora_adapter"], kw["max_lora_rank"] = lora_request_parts(Path(model_dir), card)
    kw.update(overrides)
    return VLLMScorer(model_path, prompt, **kw)


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def lora_request_parts(detector_dir: Path, card: DetectorCard) -> tuple[str, Path, int]:
    """(upstream model, adapter folder, max_lora_rank) to score a detector as its upstream model plus a
    LoRA request, as a GPU server would serve many adapters over one base (``evaluate.vllm_mode: lora``)."""
    if card.lora_modules_to_save:
        raise ModelLoadError(
            f"{detector_dir}: a LoRA request cannot carry the detector's trained full copies of "
            f"{card.lora_modules_to_save} (train.stage2.modules_to_save); score its merged weights "
            "(evaluate.vllm_mode: merged)")
    adapter = detector_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ModelLoadError(f"{detector_dir}: no adapter/adapter_config.json for a LoRA request")
    upstream = Path(card.base_model)
    if not upstream.exists():
        raise ModelLoadError(
            f"{detector_dir}: its upstream model {card.base_model} (detector.json base_model) is not here; a "
            "LoRA request needs it beside the adapter (evaluate.vllm_mode: merged needs only the detector)")
    rank = next((r for r in VLLM_LORA_RANKS if r >= card.lora_r), None)
    if rank is None:
        raise ModelLoadError(f"{detector_dir}: lora_r {card.lora_r} is above vLLM's largest max_lora_rank "
                             f"{VLLM_LORA_RANKS[-1]}")
    return resolve_model_ref(upstream), adapter, rank


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
