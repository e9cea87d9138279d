"""Qwen's own tokenizer, rebuilt offline from ``qwen.tiktoken``, for benchmarks on the study's prompt.

The model hub is not reachable here, but Qwen's vocabulary (151,643 byte-level BPE ranks: the one
Qwen1.5 ships, converted, as ``tokenizer.json``) is published on PyPI inside the ``dashscope`` SDK:

    pip download dashscope==2.0.2 --no-deps -d /tmp/qtok && cd /tmp/qtok && \\
        unzip -o dashscope-2.0.2-py3-none-any.whl dashscope/resources/qwen.tiktoken

``qwen_tokenizer(path)`` converts it with transformers' ``TikTokenConverter`` (as Qwen's own
conversion did), adds the three ChatML special tokens at Qwen's ids (151643-151645) and Qwen1.5-Chat's
chat template, default system message included. A random-weight model over this tokenizer sees the
study's prompt token for token as Qwen1.5-1.8B-Chat does. Benchmarks only: the pipeline never needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Qwen's pre-tokenisation pattern (tokenization_qwen.py; dashscope/tokenizers/qwen_tokenizer.py)
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen1.5-Chat's tokenizer_config.json chat_template
QWEN15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def qwen_tokenizer(tiktoken_file: Path) -> Any:
    """A ``PreTrainedTokenizerFast`` with Qwen's vocabulary, special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from tasks.base_model import SPECIAL_TOKENS  # the same ChatML special tokens, in Qwen's order

    path = Path(tiktoken_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (see benchmarks/qwen_vocab.py for where to get it)")
    tok = TikTokenConverter(vocab_file=str(path), pattern=QWEN_PATTERN,
                            extra_special_tokens=SPECIAL_TOKENS).converted()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, additional_special_tokens=["<|im_start|>"],
                                   model_max_length=32768)
    fast.chat_template = QWEN15_CHAT_TEMPLATE
    ids = fast.convert_tokens_to_ids(SPECIAL_TOKENS)
    if ids != [151643, 151644, 151645]:
        raise ValueError(f"{path}: special tokens landed at {ids}, not Qwen's 151643-151645")
    return fast
