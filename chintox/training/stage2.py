"""Stage 2's data, loss and validation scoring: ToxiCN texts after the study's prompt, the answer token.

:class:`Stage2Data` tokenises the records once under the shared-prefix layout of :mod:`chintox.prefix`
(prompt prefix ids + text ids cut to ``max_seq_len`` + the chat suffix); :func:`answer_loss` is the
training loss at the answer position; :func:`score_texts` scores a split with the detector's score
(:func:`chintox.prefix.answer_scores`, the same function the ``hf`` backend uses), in input
order, for epoch selection and threshold tuning.
"""

from __future__ import annotations

from typing import Any


class Stage2Data:
    """Tokenised ToxiCN records for the shared-prefix forward: text+suffix ids, labels."""

    def __init__(self, tokenizer: Any, prompt: Any, records: list[dict], max_seq_len: int):
        from chintox.prefix import encode_prompt_parts
        from chintox.prompting import answer_token_ids

        self.prefix_ids, self.suffix = encode_prompt_parts(tokenizer, prompt)
        self.pos_id, self.neg_id = answer_token_ids(tokenizer, prompt)
        self.max_suffix = max_seq_len - len(self.prefix_ids)
        if self.max_suffix < 8:
            raise ValueError(f"max_seq_len {max_seq_len} leaves no room for the text after the "
                             f"{len(self.prefix_ids)}-token prompt")
        self.tokenizer = tokenizer
        self.texts = [r["text"] for r in records]
        self.labels = [int(r["label"]) for r in records]

    def batch(self, idx: list[int]) -> tuple[Any, Any, Any]:
        import torch

        from chintox.prefix import encode_texts

        ids, lengths = encode_texts(self.tokenizer, [self.texts[i] for i in idx], self.suffix, self.max_suffix)
        y = torch.tensor([self.labels[i] for i in idx], dtype=torch.long)
        return ids, lengths, y


def answer_loss(logits: Any, y: Any, pos_id: int, neg_id: int, kind: str) -> Any:
    """Loss on the answer position. ``full``: cross-entropy over the whole vocabulary with the answer
    token as target (the model also learns to put its mass on the two answer words, which matters
    to a generation-based scorer). ``pair``: 2-way softmax over (否, 是) only."""
    import torch.nn.functional as F

    if kind == "pair":
        pair = logits[:, [neg_id, pos_id]].float()
        return F.cross_entropy(pair, y.to(logits.device))
    target = (y * pos_id + (1 - y) * neg_id).to(logits.device)
    return F.cross_entropy(logits.float(), target)


def score_texts(model: Any, data: Stage2Data, batch_size: int, desc: str = "score",
                loss_kind: str = "full") -> tuple[list[float], float]:
    """p(是)/(p(是)+p(否)) per text, and the mean answer loss (of the kind training uses)."""
    import torch
    from tqdm.auto import tqdm

    from chintox.prefix import answer_scores, build_prefix_cache

    was_training = model.training
    model.eval()
    scores: list[float] = []
    loss_sum = 0.0
    with torch.no_grad():
        cache = build_prefix_cache(model, data.prefix_ids)
        for s in tqdm(range(0, len(data.texts), batch_size), desc=desc, unit="batch", leave=False):
            idx = list(range(s, min(s + batch_size, len(data.texts))))
            ids, lengths, y = data.batch(idx)
            batch_scores, logits = answer_scores(model, data.prefix_ids, ids, lengths, data.pos_id, data.neg_id,
                                                 prefix_cache=cache)
            scores += batch_scores.tolist()
            loss_sum += float(answer_loss(logits, y, data.pos_id, data.neg_id, loss_kind)) * len(idx)
    model.train(was_training)
    return scores, loss_sum / max(1, len(data.texts))


__all__ = ["Stage2Data", "answer_loss", "score_texts"]
