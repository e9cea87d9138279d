"""A trained detector folder as one object: ``Detector(path).predict(texts)``.

The folder (written by the stage-2 step) holds its card ``detector.json`` (:class:`chintox.card.
DetectorCard`: answer words, val-tuned threshold, dtype, context window, ...), ``prompt.txt`` and
``merged/`` (the merged model with its tokenizer). Scores come from a :class:`chintox.scoring.Scorer`
(backend ``hf`` by default: no vLLM import), in the card's ``dtype`` with the card's ``max_model_len``,
labels from the card's tuned ``threshold``. The MLflow pyfunc (:mod:`chintox.pyfunc`) wraps this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chintox.card import DetectorCard
from chintox.modeling import resolve_model_ref
from chintox.prompting import load_prompt


class Detector:
    def __init__(self, path: str | Path, backend: str = "hf", threshold: float | None = None,
                 max_model_len: int | None = None, batch_size: int = 32, dtype: str | None = None,
                 progress: bool = False, device: str = "auto", **backend_kwargs: Any):
        p = Path(path)
        self.path = p
        self.card = DetectorCard.read(p)
        card = self.card
        self.prompt = load_prompt(p / "prompt.txt", card.answer_positive, card.answer_negative)
        self.threshold = float(card.threshold if threshold is None else threshold)
        model_path = resolve_model_ref(p / "merged")
        kw: dict[str, Any] = {"max_model_len": int(max_model_len or card.max_model_len),
                              "dtype": dtype or card.dtype, "progress": progress}
        kw.update(backend_kwargs)
        if backend == "hf":
            from chintox.scoring.hf import HFScorer

            self.scorer = HFScorer(model_path, self.prompt, batch_size=batch_size, device=device, **kw)
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
        """One ``{"label": 0|1, "score": float}`` per text (label = score >= the card's threshold)."""
        return [{"label": int(s >= self.threshold), "score": s} for s in self.scores(texts)]

    def close(self) -> None:
        self.scorer.close()
