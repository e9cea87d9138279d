"""Qwen's own tokenizer, rebuilt offline from ``qwen.tiktoken``: the rehearsal base's tokenizer.

The model hub is not reachable everywhere this product runs, but Qwen's vocabulary (151,643
byte-level BPE ranks: the one Qwen1.5 ships, converted, as ``tokenizer.json``) is published on PyPI
inside the ``dashscope`` SDK (``dashscope/resources/qwen.tiktoken``), which the lock file pins.

:func:`qwen_tokenizer` converts it the way Qwen's own conversion did (transformers'
``TikTokenConverter``: vocabulary and merges from the ranks, Qwen's pre-tokenisation pattern) into a
``Qwen2Tokenizer`` with what Qwen1.5-Chat's ``tokenizer_config.json`` says: NFC normalisation, the
three ChatML special tokens at Qwen's ids 151643-151645, ``<|im_end|>`` as end of sequence,
``<|endoftext|>`` as padding, no BOS/UNK, and Qwen1.5-Chat's chat template with its default system
message. Saved with ``save_pretrained`` it is a normal tokenizer folder that ``AutoTokenizer`` and
vLLM load as they load ``Qwen/Qwen1.5-1.8B-Chat``'s.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

# The ChatML special tokens, in Qwen's order (ids 151643, 151644, 151645 after the 151,643 ranks).
CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_SPECIAL_IDS = [151643, 151644, 151645]
# Qwen's pre-tokenisation pattern (tokenization_qwen.py; transformers' Qwen2Tokenizer)
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen1.5-Chat's tokenizer_config.json chat_template: a default system turn when none is given
QWEN15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN_MAX_LENGTH = 32768


class QwenVocabError(FileNotFoundError):
    """``qwen.tiktoken`` is not where it should be, or is not Qwen's."""


def default_tiktoken_file() -> Path:
    """``qwen.tiktoken`` inside the installed ``dashscope`` package (found without importing it)."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise QwenVocabError(
            "qwen.tiktoken: the dashscope package that ships it is not installed (it is in the lock "
            "file: run `make setup`), and model.rehearsal.tiktoken_file is not set")
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"


def tiktoken_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def qwen_tokenizer(tiktoken_file: str | Path | None = None) -> Any:
    """A ``Qwen2Tokenizer`` with Qwen's vocabulary, special tokens and Qwen1.5-Chat's chat template."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = Path(tiktoken_file) if tiktoken_file else default_tiktoken_file()
    if not path.is_file():
        raise QwenVocabError(f"{path}: not found (Qwen's qwen.tiktoken; the pinned dashscope wheel ships it)")
    vocab, merges = TikTokenConverter(vocab_file=str(path), pattern=QWEN_PATTERN).extract_vocab_merges_from_model(
        str(path))
    if len(vocab) != QWEN_SPECIAL_IDS[0]:
        raise QwenVocabError(f"{path}: {len(vocab)} ranks, Qwen's vocabulary has {QWEN_SPECIAL_IDS[0]}")
    for token, idx in zip(CHATML_SPECIAL_TOKENS, QWEN_SPECIAL_IDS):
        vocab[token] = idx
    tok = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
        pad_token="<|endoftext|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=QWEN_MAX_LENGTH, errors="replace", split_special_tokens=False,
    )
    tok.chat_template = QWEN15_CHAT_TEMPLATE
    ids = tok.convert_tokens_to_ids(CHATML_SPECIAL_TOKENS)
    if ids != QWEN_SPECIAL_IDS:
        raise QwenVocabError(f"{path}: special tokens landed at {ids}, not Qwen's {QWEN_SPECIAL_IDS}")
    return tok


__all__ = ["CHATML_SPECIAL_TOKENS", "QWEN15_CHAT_TEMPLATE", "QwenVocabError", "default_tiktoken_file",
           "qwen_tokenizer", "tiktoken_sha256"]
