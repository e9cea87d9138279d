"""The detector's prompt: one place that turns a text into chat messages and token ids.

Training (stage 2), every scoring backend and the registered pyfunc call these functions, so the
model always sees exactly the prompt it was trained with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class PromptError(ValueError):
    """A prompt file or answer word that the detector cannot use."""


@dataclass(frozen=True)
class Prompt:
    instruction: str
    answer_positive: str = "是"
    answer_negative: str = "否"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.instruction.encode("utf-8")).hexdigest()

    def user_content(self, text: str) -> str:
        return f"{self.instruction}{text}"

    def messages(self, text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.user_content(text)}]

    def answer(self, label: int) -> str:
        return self.answer_positive if int(label) == 1 else self.answer_negative


def load_prompt(path: str | Path, answer_positive: str = "是", answer_negative: str = "否") -> Prompt:
    p = Path(path)
    if not p.is_file():
        raise PromptError(f"prompt file not found: {p}")
    text = p.read_text(encoding="utf-8")
    # The instruction ends with a newline after '文本：'; keep it, the text follows directly.
    if not text.strip():
        raise PromptError(f"prompt file is empty: {p}")
    if answer_positive == answer_negative:
        raise PromptError("the positive and negative answer words must differ")
    return Prompt(instruction=text, answer_positive=answer_positive, answer_negative=answer_negative)


def prompt_from_config(cfg: Any) -> Prompt:
    """Build the :class:`Prompt` named by a :class:`chintox.config.Config`."""
    m = cfg.model
    return load_prompt(m.prompt_file, m.answer_positive, m.answer_negative)


def answer_token_ids(tokenizer: Any, prompt: Prompt) -> tuple[int, int]:
    """Token ids of the positive and negative answer words; each must be exactly one token."""
    ids = []
    for word in (prompt.answer_positive, prompt.answer_negative):
        toks = tokenizer.encode(word, add_special_tokens=False)
        if len(toks) != 1:
            raise PromptError(
                f"answer word {word!r} is {len(toks)} tokens {toks} for this tokenizer; the detector "
                "reads one token's probability, so each answer word must be a single token"
            )
        ids.append(toks[0])
    return ids[0], ids[1]


def render_chat(tokenizer: Any, prompt: Prompt, text: str, with_answer: int | None = None) -> str:
    """The chat-template string for ``text``; ends with the assistant turn opened (generation
    prompt), plus the answer word when ``with_answer`` is a label (training)."""
    rendered = tokenizer.apply_chat_template(
        prompt.messages(text), tokenize=False, add_generation_prompt=True
    )
    if with_answer is not None:
        rendered += prompt.answer(with_answer)
    return rendered


def split_prefix(tokenizer: Any, prompt: Prompt) -> tuple[str, str]:
    """Split the rendered template around the text: (shared prefix, per-text suffix template).

    Every prompt starts with the same instruction, so its keys and values can be computed once and
    reused; this returns the string before the text and the string after it.
    """
    marker = "\u2063\u2063TEXT\u2063\u2063"
    rendered = render_chat(tokenizer, prompt, marker)
    if rendered.count(marker) != 1:
        raise PromptError("the chat template does not place the text exactly once")
    before, after = rendered.split(marker)
    return before, after
