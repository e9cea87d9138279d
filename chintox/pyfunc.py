"""The registered detector as an MLflow pyfunc: raw texts in, ``label`` and ``score`` out.

The model version holds the whole detector folder (``merged/`` model and tokenizer, or ``adapter/``
plus the base it was trained on, ``prompt.txt`` and ``detector.json`` with the threshold) as the
artifact ``detector``; :class:`DetectorModel` loads it and scores with the same prompt the detector
was trained with. Loading and scoring go through :func:`load_detector` only, which uses
:class:`chintox.detector.Detector` (backend ``hf``) when that module is there and a small built-in
transformers scorer otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc

DETECTOR_ARTIFACT = "detector"
DETECTOR_FILES = ("detector.json", "prompt.txt")


class DetectorFolderError(FileNotFoundError):
    """A folder that is not a trained detector."""


def check_detector_dir(path: str | Path) -> dict[str, Any]:
    """Return ``detector.json`` of a detector folder, or raise a clear error."""
    p = Path(path)
    if not p.is_dir():
        raise DetectorFolderError(f"detector folder not found: {p.resolve()} (run the stage2 step first)")
    missing = [f for f in DETECTOR_FILES if not (p / f).is_file()]
    if missing:
        raise DetectorFolderError(f"{p.resolve()} is not a detector folder: missing {', '.join(missing)}")
    if not (p / "merged" / "config.json").is_file() and not (p / "adapter").is_dir():
        raise DetectorFolderError(f"{p.resolve()} holds neither merged/ (a model folder) nor adapter/")
    return json.loads((p / "detector.json").read_text(encoding="utf-8"))


class _BuiltinScorer:
    """P(answer_positive) / (P(positive) + P(negative)) at the first answer position, with transformers."""

    def __init__(self, path: str | Path, batch_size: int = 16) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from chintox.prompting import Prompt, answer_token_ids

        p = Path(path)
        meta = check_detector_dir(p)
        self.meta = meta
        self.threshold = float(meta.get("threshold", meta.get("threshold_default", 0.5)))
        self.max_len = int(meta.get("max_seq_len", 512))
        self.batch_size = batch_size
        self.prompt = Prompt(
            instruction=(p / "prompt.txt").read_text(encoding="utf-8"),
            answer_positive=meta.get("answer_positive", "是"),
            answer_negative=meta.get("answer_negative", "否"),
        )
        if (p / "merged" / "config.json").is_file():
            src = p / "merged"
            self.tok = AutoTokenizer.from_pretrained(src)
            self.model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, use_safetensors=True)
        else:  # base + adapter
            from peft import PeftModel

            from chintox.modeling import resolve_model_ref

            base = resolve_model_ref(meta["base_model"])
            tok_src = p / "adapter" if (p / "adapter" / "tokenizer_config.json").is_file() else base
            self.tok = AutoTokenizer.from_pretrained(tok_src)
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
            self.model = PeftModel.from_pretrained(model, p / "adapter")
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "left"
        self.model.eval()
        self.pos_id, self.neg_id = answer_token_ids(self.tok, self.prompt)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        import torch

        from chintox.prompting import render_chat

        out: list[dict[str, Any]] = []
        for i in range(0, len(texts), self.batch_size):
            chunk = [render_chat(self.tok, self.prompt, t) for t in texts[i:i + self.batch_size]]
            enc = self.tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False,
                           truncation=True, max_length=self.max_len)
            with torch.no_grad():
                logits = self.model(**enc).logits[:, -1, :]
            pair = torch.stack([logits[:, self.pos_id], logits[:, self.neg_id]], dim=-1).float()
            scores = torch.softmax(pair, dim=-1)[:, 0].tolist()
            out.extend({"label": int(s >= self.threshold), "score": float(s)} for s in scores)
        return out


def load_detector(path: str | Path) -> Any:
    """The one place that turns a detector folder into an object with ``predict(texts)``."""
    check_detector_dir(path)
    try:
        from chintox.detector import Detector  # the evaluation engineer's scorer
    except ImportError:
        return _BuiltinScorer(path)
    if hasattr(Detector, "load"):
        return Detector.load(path, backend="hf")
    return Detector(path, backend="hf")


def _texts(model_input: Any) -> list[str]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        col = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[col].tolist()]
    if isinstance(model_input, pd.Series):
        return [str(t) for t in model_input.tolist()]
    if isinstance(model_input, dict):
        v = model_input.get("text", next(iter(model_input.values())))
        return [v] if isinstance(v, str) else [str(t) for t in v]
    if isinstance(model_input, str):
        return [model_input]
    return [str(t) for t in model_input]


class DetectorModel(mlflow.pyfunc.PythonModel):
    """pyfunc: a DataFrame with a ``text`` column (or a list of strings) -> DataFrame label, score."""

    def load_context(self, context) -> None:
        self._detector = load_detector(context.artifacts[DETECTOR_ARTIFACT])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        texts = _texts(model_input)
        rows = self._detector.predict(texts) if texts else []
        return pd.DataFrame(
            {"label": [int(r["label"]) for r in rows], "score": [float(r["score"]) for r in rows]},
            columns=["label", "score"],
        )


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema([ColSpec("long", "label"), ColSpec("double", "score")]),
    )
