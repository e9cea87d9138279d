"""transformers backend: the shared instruction's keys/values once, texts batched by length.

``score`` sorts the texts by token length, cuts them into batches of ``batch_size``, and runs only the
per-text part (text + chat suffix) on top of the prefix cache from :mod:`chintox.prefix`; the answer
logits come from the last real position of each row. No per-sample loop.

``generate_labels`` is the study's non-vLLM path: ``model.generate`` one text at a time, then the
output is parsed for the answer words (kept as the benchmark baseline and the generate-and-parse mode).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from chintox.modeling import load_model, load_tokenizer, model_window, pick_device
from chintox.prefix import answer_scores, pair_score
from chintox.prompting import Prompt, answer_token_ids
from chintox.scoring.base import PromptEncoder, Scorer, parse_answer


class HFScorer(Scorer):
    name = "hf"

    def __init__(self, model_path: str | Path, prompt: Prompt, max_model_len: int = 1024,
                 dtype: str = "float32", batch_size: int = 32, device: str = "cpu",
                 max_new_tokens: int = 4, trust_remote_code: bool = False, progress: bool = True):
        super().__init__()
        t0 = time.perf_counter()
        import torch

        from chintox.prefix import build_prefix_cache

        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self.prompt = prompt
        self.answer_ids = answer_token_ids(self.tokenizer, prompt)  # PromptError when multi-token
        device = pick_device(device)  # auto | cpu | cuda (evaluate.device)
        self.model = load_model(model_path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        self.model.eval()
        self.max_len = model_window(self.model, max_model_len)
        self.encoder = PromptEncoder(self.tokenizer, prompt, self.max_len, reserve=1)
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.progress = progress
        self.device = device
        with torch.inference_mode():
            self.prefix_cache = build_prefix_cache(self.model, self.encoder.prefix_ids)
        self.answer_mass: np.ndarray | None = None  # p(pos) + p(neg) of the last score() call
        self.startup_seconds = time.perf_counter() - t0

    def score(self, texts: list[str]) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        rows = self.encoder.encode(list(texts), self.stats)
        n = len(rows)
        scores = np.empty(n, dtype=np.float64)
        mass = np.empty(n, dtype=np.float64)
        order = np.argsort([len(r) for r in rows], kind="stable")
        pad = self.tokenizer.pad_token_id or 0
        pos, neg = self.answer_ids
        with torch.inference_mode(), tqdm(total=n, desc="score [hf]", unit="text",
                                          disable=not self.progress or n == 0) as bar:
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = [rows[i] for i in idx]
                width = max(len(r) for r in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                for j, r in enumerate(batch):
                    ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
                lengths = torch.tensor([len(r) for r in batch], dtype=torch.long)
                s, logits = answer_scores(self.model, self.encoder.prefix_ids, ids, lengths, pos, neg,
                                          prefix_cache=self.prefix_cache)
                scores[idx] = s.double().cpu().numpy()
                two = torch.log_softmax(logits, dim=-1)[:, [pos, neg]].double().cpu().numpy()
                mass[idx] = np.exp(two).sum(axis=1)
                bar.update(len(batch))
        self.answer_mass = mass
        return scores

    def generate_one(self, row: list[int]) -> tuple[str, float]:
        """The study's path for one text: greedy ``generate``; (decoded output, first-step score)."""
        import torch

        ids = torch.tensor([self.encoder.prefix_ids + row], dtype=torch.long, device=self.device)
        out = self.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
            do_sample=False, output_scores=True, return_dict_in_generate=True,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        pos, neg = self.answer_ids
        score = float(pair_score(out.scores[0][:1], pos, neg)[0])
        text = self.tokenizer.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=True)
        return text, score

    def generate_labels(self, texts: list[str]) -> tuple[np.ndarray, int]:
        labels, _ = self.generate_with_scores(texts)
        return labels, int((labels < 0).sum())

    def generate_with_scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample ``generate`` (one text at a time, like the study): parsed labels and scores."""
        import torch
        from tqdm.auto import tqdm

        rows = self.encoder.encode(list(texts), self.stats, reserve=self.max_new_tokens)
        labels = np.empty(len(rows), dtype=np.int64)
        scores = np.empty(len(rows), dtype=np.float64)
        with torch.inference_mode():
            for i, row in enumerate(tqdm(rows, desc="generate [hf, per sample]", unit="text",
                                         disable=not self.progress)):
                text, scores[i] = self.generate_one(row)
                labels[i] = parse_answer(text, self.prompt)
        return labels, scores

    def close(self) -> None:
        self.model = None
        self.prefix_cache = None
