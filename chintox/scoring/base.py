"""The scorer interface every backend implements, and the prompt encoding they all share.

Score of a text = p(positive word) / (p(positive word) + p(negative word)) at the first answer
position, after the study's prompt rendered through the model's chat template: from a model's logits
by :func:`chintox.prefix.answer_scores` (the ``hf`` backend and stage-2 validation share it), from
returned log-probabilities by :func:`two_way_score` (vLLM).

Token ids are built here, once, for every backend (vLLM receives them as ``TokensPrompt``), so the
backends see identical tokens:

    ids = prefix_ids (chat template + instruction, shared by every text)
        + text_ids   (the text, possibly truncated)
        + suffix_ids (end of the user turn + opening of the assistant turn)

Truncation policy: the prompt and the chat-template suffix are kept whole; an over-long text is cut
from its end (at a token boundary) so that the whole sequence plus the tokens to be produced fits
``min(evaluate.max_model_len, model max_position_embeddings)``. Truncated texts are counted.
Empty text: scored as-is (the prompt alone, the model judges an empty text) and counted.
Leading newlines of a text are dropped, as in training (see :mod:`chintox.prefix`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from chintox.prefix import encode_prompt_parts, text_rows
from chintox.prompting import Prompt, PromptError


@dataclass
class EncodeStats:
    """Counts of the inputs a backend had to treat specially (reported per evaluation set)."""

    n: int = 0
    truncated: int = 0
    empty: int = 0
    tokens_cut: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"n": self.n, "truncated": self.truncated, "empty": self.empty, "tokens_cut": self.tokens_cut}


class PromptEncoder:
    """Turns texts into token ids under the truncation policy (shared by every backend)."""

    def __init__(self, tokenizer: Any, prompt: Prompt, max_len: int, reserve: int = 1):
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.max_len = int(max_len)
        self.reserve = int(reserve)
        self.prefix_ids, self.suffix_ids = encode_prompt_ids(tokenizer, prompt)
        self.text_budget = self.max_len - self.reserve - len(self.prefix_ids) - len(self.suffix_ids)
        if self.text_budget < 1:
            raise PromptError(
                f"the prompt alone is {len(self.prefix_ids) + len(self.suffix_ids)} tokens, which leaves no "
                f"room for a text in a window of {self.max_len} tokens; raise evaluate.max_model_len "
                "(up to the model's max_position_embeddings) or shorten the prompt"
            )

    def encode(self, texts: list[str], stats: EncodeStats | None = None,
               reserve: int | None = None) -> list[list[int]]:
        """Per text: the ids after the shared prefix (text ids + suffix ids)."""
        budget = self.text_budget + self.reserve - (self.reserve if reserve is None else int(reserve))
        rows, cut = text_rows(self.tokenizer, texts, self.suffix_ids, budget)
        if stats is not None:
            stats.n += len(texts)
            stats.empty += sum(1 for t in texts if not t or not t.strip())
            stats.truncated += sum(1 for n in cut if n)
            stats.tokens_cut += sum(cut)
        return rows

    def full_ids(self, rows: list[list[int]]) -> list[list[int]]:
        return [self.prefix_ids + r for r in rows]


def encode_prompt_ids(tokenizer: Any, prompt: Prompt) -> tuple[list[int], list[int]]:
    """(prefix ids, suffix ids) around the text, as training encodes them (:mod:`chintox.prefix`)."""
    prefix_ids, suffix = encode_prompt_parts(tokenizer, prompt)
    return list(prefix_ids), tokenizer.encode(suffix, add_special_tokens=False)


def parse_answer(output: str, prompt: Prompt) -> int:
    """The study's generate-and-parse reading: 1, 0, or -1 when the output is neither answer."""
    out = output.strip()
    pos, neg = prompt.answer_positive, prompt.answer_negative
    if out.startswith(pos):
        return 1
    if out.startswith(neg):
        return 0
    has_pos, has_neg = pos in out, neg in out
    if has_pos != has_neg:
        return 1 if has_pos else 0
    return -1


def two_way_score(lp_pos: np.ndarray, lp_neg: np.ndarray) -> np.ndarray:
    """p(pos) / (p(pos) + p(neg)) from two log-probabilities (or logits: the ratio is the same), for
    the backends that only get log-probabilities back (vLLM, ``generate``); a model's own logits are
    scored with :func:`chintox.prefix.pair_score`."""
    d = np.asarray(lp_pos, dtype=np.float64) - np.asarray(lp_neg, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-d))


class Scorer(abc.ABC):
    """One interface for every backend: ``score(texts)``, ``generate_labels(texts)``, ``close()``.

    ``startup_seconds`` is the load time (model, tokenizer, engine, shared-prefix cache), measured once;
    throughput figures exclude it. ``stats`` accumulates truncation / empty-text counts;
    ``reset_stats()`` starts a new count (one per evaluation set).
    """

    name = "base"

    def __init__(self) -> None:
        self.startup_seconds = 0.0
        self.stats = EncodeStats()

    @abc.abstractmethod
    def score(self, texts: list[str]) -> np.ndarray:
        """Scores in [0, 1], one per text, in input order."""

    @abc.abstractmethod
    def generate_labels(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """The study's mode: generate, parse '是'/'否'; labels (-1 = unparsed) and the unparsed count."""

    def close(self) -> None:
        """Free the model / engine."""

    def reset_stats(self) -> EncodeStats:
        old, self.stats = self.stats, EncodeStats()
        return old

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
