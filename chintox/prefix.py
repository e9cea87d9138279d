"""Shared-prefix key/value reuse: the detector's prompt is computed once, not once per text.

Every detector input is ``<chat prefix with the fixed instruction> + text + <suffix template>``; the
prefix (~270 tokens for the tiny base) is identical for every example and usually longer than the
text. Running it once per batch (training: LoRA changes its keys/values at each step, so it must be
recomputed with gradients once per batch) or once per model (inference: :func:`build_prefix_cache`),
and expanding its keys and values across the batch gives the same logits as the plain full-sequence
forward and makes stage 2 about 5x cheaper on CPU.

Token boundary. The prefix is tokenised on its own and each ``text + suffix`` on its own. For the
byte-level BPE tokenizers of the Qwen family (the tiny base and Qwen1.5) this equals tokenising the
whole string, because the prefix ends with a newline that the pre-tokenizer regex always splits from
following letters, digits, punctuation or a single space, and the suffix starts with the special token
``<|im_end|>``, which is never merged with what precedes it. The exception is a text that itself
starts with a newline ("\\n\\n" would pre-tokenise as one piece); :func:`encode_texts` strips leading
newlines from texts for that reason (they carry no meaning for the task). ``tests/unit/train/
test_prefix.py`` checks the equality on real-looking texts.

Gradient checkpointing. transformers drops ``past_key_values`` inside checkpointed decoder layers in
training mode, which would silently ignore the prefix; :func:`answer_logits` detects that case and
falls back to the plain full-sequence forward (same result, no sharing).
"""

from __future__ import annotations

from typing import Any

import torch

from chintox.prompting import Prompt, split_prefix


def encode_prompt_parts(tokenizer: Any, prompt: Prompt) -> tuple[list[int], str]:
    """(prefix token ids before the text, suffix template string after the text)."""
    prefix_str, suffix_str = split_prefix(tokenizer, prompt)
    prefix_ids = tokenizer.encode(prefix_str, add_special_tokens=False)
    return list(prefix_ids), suffix_str


def text_rows(tokenizer: Any, texts: list[str], suffix_ids: list[int],
              text_budget: int | None = None) -> tuple[list[list[int]], list[int]]:
    """The truncation policy, for training and every scoring backend: per text, its ids (leading
    newlines stripped: after the prompt's final newline they would merge with it under byte-level
    BPE) cut from the end to ``text_budget`` tokens, then the suffix ids kept whole; and the number
    of tokens cut from each text."""
    cleaned = [t.lstrip("\r\n") for t in texts]
    enc = tokenizer(cleaned, add_special_tokens=False)["input_ids"] if texts else []
    rows: list[list[int]] = []
    cut: list[int] = []
    for ids in enc:
        n = 0
        if text_budget is not None and len(ids) > text_budget:
            keep = max(0, text_budget)
            n, ids = len(ids) - keep, ids[:keep]
        rows.append(list(ids) + list(suffix_ids))
        cut.append(n)
    return rows, cut


def encode_texts(
    tokenizer: Any,
    texts: list[str],
    suffix: str,
    max_suffix_len: int | None = None,
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Right-padded ``[B, S]`` ids of ``text + suffix`` and their ``[B]`` lengths.

    ``max_suffix_len`` (= max_seq_len - prefix length) cuts over-long *texts* from their end, keeping
    the suffix template whole, so the answer position is always the assistant turn's first token.
    """
    suffix_ids = tokenizer.encode(suffix, add_special_tokens=False)
    budget = None if max_suffix_len is None else max(0, max_suffix_len - len(suffix_ids))
    rows, _ = text_rows(tokenizer, texts, suffix_ids, budget)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if rows else 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out, lengths


def _as_prefix(prefix_ids: Any, device: torch.device) -> torch.LongTensor:
    p = torch.as_tensor(prefix_ids, dtype=torch.long, device=device)
    return p.unsqueeze(0) if p.dim() == 1 else p


def _decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body (returns hidden states) and the LM head, through peft wrappers too."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    return body, base.get_output_embeddings()


def _checkpointing_in_training(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_gradient_checkpointing", False)) and base.training


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _prefix_kv(model: Any, prefix: torch.LongTensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    body, _ = _decoder_and_head(model)
    out = body(input_ids=prefix, use_cache=True)
    return [(k, v) for k, v, *_ in out.past_key_values]


class PrefixCache:
    """Keys/values of the prefix for one model (batch 1), reused read-only by :func:`answer_logits`.

    A fresh ``DynamicCache`` is built from these tensors for every call (the model's ``update`` would
    otherwise grow the shared one), so one :class:`PrefixCache` serves any number of batches.
    """

    def __init__(self, kv: list[tuple[torch.Tensor, torch.Tensor]], length: int):
        self.kv = kv
        self.length = length


@torch.no_grad()
def build_prefix_cache(model: Any, prefix_ids: Any) -> PrefixCache:
    """Compute the prefix keys/values once, for inference (the model's weights must not change)."""
    prefix = _as_prefix(prefix_ids, _device(model))
    kv = [(k.detach(), v.detach()) for k, v in _prefix_kv(model, prefix)]
    return PrefixCache(kv, prefix.shape[1])


def _batch_cache(model: Any, kv: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> Any:
    from transformers import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    data = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv]
    return DynamicCache(ddp_cache_data=data, config=base.config)


def _gather_last(hidden: torch.Tensor, lengths: torch.LongTensor) -> torch.Tensor:
    idx = (lengths.to(hidden.device) - 1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def full_answer_logits(
    model: Any, prefix_ids: Any, suffix_ids: torch.LongTensor, suffix_lengths: torch.LongTensor
) -> torch.Tensor:
    """Reference path: plain forward over ``prefix + suffix`` (right-padded), no cache sharing."""
    dev = _device(model)
    prefix = _as_prefix(prefix_ids, dev)
    suffix_ids, suffix_lengths = suffix_ids.to(dev), suffix_lengths.to(dev)
    b, s = suffix_ids.shape
    p = prefix.shape[1]
    ids = torch.cat([prefix.expand(b, -1), suffix_ids], dim=1)
    mask = torch.cat(
        [torch.ones(b, p, dtype=torch.long, device=dev),
         (torch.arange(s, device=dev)[None, :] < suffix_lengths[:, None]).long()], dim=1)
    body, head = _decoder_and_head(model)
    hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return head(_gather_last(hidden, suffix_lengths + p))


def answer_logits(
    model: Any,
    prefix_ids: Any,
    suffix_ids: torch.LongTensor,
    suffix_lengths: torch.LongTensor,
    prefix_cache: PrefixCache | None = None,
) -> torch.Tensor:
    """Next-token logits ``[B, V]`` after each row's last real suffix token.

    ``prefix_ids``: ``[P]`` or ``[1, P]``; ``suffix_ids``: ``[B, S]`` right-padded ``text + suffix``
    ids; ``suffix_lengths``: ``[B]`` real lengths. Without ``prefix_cache`` the prefix is run once
    (with gradients when enabled: training) and its keys/values expanded over the batch; with one
    (from :func:`build_prefix_cache`) it is reused as is. Only the ``B`` answer positions go through
    the LM head, not all ``B x S``.
    """
    if _checkpointing_in_training(model):
        return full_answer_logits(model, prefix_ids, suffix_ids, suffix_lengths)
    dev = _device(model)
    suffix_ids, suffix_lengths = suffix_ids.to(dev), suffix_lengths.to(dev)
    b, s = suffix_ids.shape
    if prefix_cache is None:
        prefix = _as_prefix(prefix_ids, dev)
        kv, p = _prefix_kv(model, prefix), prefix.shape[1]
    else:
        kv, p = prefix_cache.kv, prefix_cache.length
    cache = _batch_cache(model, kv, b)
    mask = torch.cat(
        [torch.ones(b, p, dtype=torch.long, device=dev),
         (torch.arange(s, device=dev)[None, :] < suffix_lengths[:, None]).long()], dim=1)
    position_ids = (torch.arange(s, device=dev) + p).unsqueeze(0).expand(b, -1)
    body, head = _decoder_and_head(model)
    hidden = body(input_ids=suffix_ids, attention_mask=mask, position_ids=position_ids,
                  past_key_values=cache, use_cache=True).last_hidden_state
    return head(_gather_last(hidden, suffix_lengths))


def pair_score(logits: torch.Tensor, pos_id: int, neg_id: int) -> torch.Tensor:
    """The detector's score from next-token logits ``[B, V]``: p(pos) / (p(pos) + p(neg)) per row, as
    the 2-way softmax of the two answer tokens' logits, in float32 (the one definition of the score
    for a model's logits)."""
    return torch.log_softmax(logits.float()[:, [neg_id, pos_id]], dim=-1)[:, 1].exp()


def answer_scores(
    model: Any,
    prefix_ids: Any,
    suffix_ids: torch.LongTensor,
    suffix_lengths: torch.LongTensor,
    pos_id: int,
    neg_id: int,
    prefix_cache: PrefixCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The detector's scores of a batch, for stage-2 validation and the ``hf`` backend alike:
    ``(scores [B], logits [B, V])``, both float32 on the model's device, from :func:`answer_logits`
    (same arguments) and :func:`pair_score`."""
    logits = answer_logits(model, prefix_ids, suffix_ids, suffix_lengths, prefix_cache=prefix_cache).float()
    return pair_score(logits, pos_id, neg_id), logits


__all__ = [
    "PrefixCache",
    "answer_logits",
    "answer_scores",
    "build_prefix_cache",
    "encode_prompt_parts",
    "encode_texts",
    "full_answer_logits",
    "pair_score",
]
