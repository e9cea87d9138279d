"""A trained detector folder as one object: ``Detector(path).predict(texts)``.

The folder (written by the stage-2 step) holds ``detector.json`` (answer words, val-tuned threshold,
max_seq_len, ...), ``prompt.txt`` and ``merged/`` (the merged model with its tokenizer). Scores come
from a :class:`chintox.scoring.Scorer` (backend ``hf`` by default: no vLLM import), labels from the
folder's tuned threshold (``threshold``; ``threshold_default`` or 0.5 when absent). The MLflow pyfunc
(:mod:`chintox.pyfunc`) wraps this class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chintox.modeling import ModelLoadError, resolve_model_ref
from chintox.prompting import load_prompt


class Detector:
    def __init__(self, path: str | Path, backend: str = "hf", threshold: float | None = None,
                 max_model_len: int | None = None, batch_size: int = 32, dtype: str | None = None,
                 progress: bool = False, **backend_kwargs: Any):
        p = Path(path)
        if not (p / "detector.json").is_file():
            raise ModelLoadError(f"{p.resolve()} is not a detector folder (no detector.json)")
        self.path = p
        self.info: dict[str, Any] = json.loads((p / "detector.json").read_text(encoding="utf-8"))
        info = self.info
        self.prompt = load_prompt(p / "prompt.txt", info.get("answer_positive", "是"),
                                  info.get("answer_negative", "否"))
        if threshold is None:
            threshold = info.get("threshold", info.get("threshold_default", 0.5))
        self.threshold = float(threshold)
        model_path = resolve_model_ref(p / "merged")
        kw: dict[str, Any] = {
            "max_model_len": int(max_model_len or info.get("max_model_len") or 1024),
            "dtype": dtype or info.get("dtype", "float32"), "progress": progress}
        kw.update(backend_kwargs)
        if backend == "hf":
            from chintox.scoring.hf import HFScorer

            self.scorer = HFScorer(model_path, self.prompt, batch_size=batch_size, **kw)
        elif backend == "vllm":
            from chintox.scoring.vllm_backend import VLLMScorer

            self.scorer = VLLMScorer(model_path, self.prompt, **kw)
        else:
            raise ValueError(f"unknown backend {backend!r}; use hf or vllm")

    @classmethod
    def load(cls, path: str | Path, backend: str = "hf", **kwargs: Any) -> Detector:
        return cls(path, backend=backend, **kwargs)

    def scores(self, texts: list[str]) -> list[float]:
        return [float(s) for s in self.scorer.score(list(texts))] if texts else []

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """One ``{"label": 0|1, "score": float}`` per text (label = score >= the folder's threshold)."""
        return [{"label": int(s >= self.threshold), "score": s} for s in self.scores(texts)]

    def close(self) -> None:
        self.scorer.close()
