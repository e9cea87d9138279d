"""Loading models and tokenizers safely, for every step that needs one.

safetensors only, ``trust_remote_code`` only when params say so, and a clear error for a missing
folder, an unknown hub id (no network here), or a tokenizer that cannot serve the detector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASE_POINTER = "base_model.json"  # in models/base when model.base is a hub id / external path


class ModelLoadError(RuntimeError):
    """A model or tokenizer that cannot be loaded, with the path or id and what to do."""


def torch_dtype(name: str) -> Any:
    import torch

    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {name!r}; use float32, bfloat16 or float16") from None


def cpu_supports_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 / AMX): oneDNN says so."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def inductor_available(device: str) -> tuple[bool, str]:
    """(whether ``torch.compile``'s default backend can build kernels for ``device`` here, why not).

    Inductor writes C++ for a CPU (it needs the compiler its config names, ``g++`` by default, or
    ``$CXX``) and Triton for CUDA (the ``triton`` package). Checked before compiling, so a machine
    without them runs eager with a log line instead of failing at the first step."""
    import importlib.util
    import os
    import shutil

    if device.startswith("cuda"):
        if importlib.util.find_spec("triton") is None:
            return False, "the triton package is not installed"
        return True, ""
    from torch._inductor import config as inductor_config

    names = list(dict.fromkeys(n for n in (os.environ.get("CXX"), *inductor_config.cpp.cxx) if n))
    if not any(shutil.which(n) for n in names):
        return False, f"no C++ compiler on PATH (looked for {', '.join(names)})"
    return True, ""


def resolve_dtype(name: str, device: str) -> tuple[str, str | None]:
    """(the dtype a model runs in on ``device``, why it differs from ``name`` or None).

    On CUDA, ``name`` as asked. On a CPU: bfloat16 when asked and the CPU computes it natively, else
    float32 (float16 is never used on a CPU: no fast kernels); the reason is for the start-up log.
    """
    if device.startswith("cuda") or name == "float32":
        return name, None
    if name == "bfloat16" and cpu_supports_bf16():
        return name, None
    why = ("this CPU has no native bfloat16 (AVX-512 BF16/AMX)" if name == "bfloat16"
           else "float16 has no fast CPU kernels")
    return "float32", f"model.dtype {name} -> float32 on the CPU: {why}"


def pick_device(preference: str = "auto") -> str:
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for (train.device / evaluate.device) but no CUDA "
                             "device is available")
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


def model_window(model_or_config: Any, max_model_len: int) -> int:
    """The context window a model is run with: ``max_model_len``, capped by the model's
    ``max_position_embeddings`` when its config has one."""
    cfg = getattr(model_or_config, "config", model_or_config)
    mpe = getattr(cfg, "max_position_embeddings", None)
    return int(min(max_model_len, mpe)) if mpe else int(max_model_len)


def _looks_local(ref: str) -> bool:
    """A path, not a hub id (``owner/name``): it starts like one, exists, has not exactly one ``/``, or
    its first part is a folder here (``models/stage2`` before it is built is a missing folder, not a
    model ``stage2`` of a hub owner ``models``)."""
    return (ref.startswith((".", "/", "~")) or Path(ref).exists() or ref.count("/") != 1
            or Path(ref).parent.is_dir())


def pointer_revision(ref: str | Path) -> str | None:
    """The hub revision a ``base_model.json`` pointer pins (None: none, or not a pointer)."""
    p = Path(str(ref)).expanduser() / BASE_POINTER
    return json.loads(p.read_text()).get("revision") if p.is_file() else None


def resolve_model_ref(ref: str | Path) -> str:
    """A local folder (possibly holding a ``base_model.json`` pointer) or a hub id → what to load."""
    ref = str(ref)
    p = Path(ref).expanduser()
    if (p / BASE_POINTER).is_file():
        return json.loads((p / BASE_POINTER).read_text())["model"]
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"model folder {p} has no config.json: not a Hugging Face model folder")
        return str(p)
    if _looks_local(ref):
        raise ModelLoadError(f"model folder not found: {p.resolve()}")
    return ref  # a hub id such as Qwen/Qwen1.5-1.8B-Chat


def load_tokenizer(ref: str | Path, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    target = resolve_model_ref(ref)
    revision = revision or pointer_revision(ref)
    try:
        tok = AutoTokenizer.from_pretrained(target, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load the tokenizer of {target!r}: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise ModelLoadError(f"tokenizer of {target!r} has no chat template; the detector needs one")
    return tok


def load_model(ref: str | Path, dtype: str = "float32", device: str = "cpu",
               trust_remote_code: bool = False, revision: str | None = None) -> Any:
    from transformers import AutoModelForCausalLM

    target = resolve_model_ref(ref)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            target,
            dtype=torch_dtype(dtype),
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            revision=revision or pointer_revision(ref),
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"cannot load model {target!r} (safetensors only, trust_remote_code={trust_remote_code}): {e}"
        ) from e
    return model.to(device)
