"""Base-model step: build the `tiny` or the `rehearsal` Qwen2 model, or point at a real one.

``model.base: tiny`` trains a byte-level BPE tokenizer on the training texts only (COIG-CQIA stage-1
records and ToxiCN train; never validation or evaluation texts), builds a small Qwen2-architecture
causal LM with a ChatML chat template, optionally pre-trains it, and saves a normal Hugging Face folder
that transformers and vLLM both load. ``model.base: rehearsal`` is Qwen in everything but its weights:
Qwen's real tokenizer (:mod:`chintox.qwen_tokenizer`) and Qwen1.5-Chat's template over a randomly
initialised Qwen2 model at the size in ``model.rehearsal``; later steps cannot tell it from a hub
Qwen1.5 chat model, so the paper recipe runs on it unchanged. Any other ``model.base`` (hub id or
local path) is checked and recorded, with ``model.revision``, in ``base_model.json``; later steps load
it from there.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chintox.config import Config, RehearsalModelConfig, TinyModelConfig
from chintox.logs import setup_logging
from chintox.modeling import BASE_POINTER, ModelLoadError, load_tokenizer, pick_device
from chintox.prompting import answer_token_ids, prompt_from_config
from chintox.qwen_tokenizer import CHATML_SPECIAL_TOKENS

log = logging.getLogger(__name__)

SPECIAL_TOKENS = CHATML_SPECIAL_TOKENS  # the same three, at the tiny vocabulary's first ids
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, must_be_single: Iterable[str] = ()) -> Any:
    """A byte-level BPE tokenizer (Qwen-style) with ChatML special tokens and chat template.

    Each word in ``must_be_single`` (the answer words) is guaranteed to be one token: if BPE did not
    learn it as one, it is added as a token of its own.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=1 << 30,
    )
    fast.chat_template = CHATML_TEMPLATE
    for word in must_be_single:
        if len(fast.encode(word, add_special_tokens=False)) != 1:
            fast.add_tokens([word])
    return fast


def build_tiny_model(tcfg: TinyModelConfig, tokenizer: Any, seed: int = 0) -> Any:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=tcfg.hidden_size,
        intermediate_size=tcfg.intermediate_size,
        num_hidden_layers=tcfg.num_layers,
        num_attention_heads=tcfg.num_heads,
        num_key_value_heads=tcfg.num_kv_heads,
        max_position_embeddings=tcfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_sliding_window=False,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    return model


def pretrain(model: Any, tokenizer: Any, texts: list[str], tcfg: TinyModelConfig, device: str,
             seed: int = 0) -> list[float]:
    """Causal-LM pre-training on packed training texts for ``pretrain_steps`` steps; returns losses."""
    import torch
    from tqdm.auto import tqdm

    if tcfg.pretrain_steps <= 0:
        return []
    rng = random.Random(seed)
    texts = list(texts)
    rng.shuffle(texts)
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    need = tcfg.pretrain_steps * tcfg.pretrain_batch_size * tcfg.pretrain_seq_len
    for t in texts:
        stream.extend(tokenizer.encode(t, add_special_tokens=False) + [eos])
        if len(stream) >= need:
            break
    if len(stream) < tcfg.pretrain_seq_len + 1:
        raise ValueError("not enough pre-training text for one sequence")
    n_seq = len(stream) // tcfg.pretrain_seq_len
    data = torch.tensor(stream[: n_seq * tcfg.pretrain_seq_len]).view(n_seq, tcfg.pretrain_seq_len)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.pretrain_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / tcfg.pretrain_steps))
    )
    losses = []
    g = torch.Generator().manual_seed(seed)
    for _step in tqdm(range(tcfg.pretrain_steps), desc="pre-train tiny base", unit="step"):
        idx = torch.randint(0, n_seq, (tcfg.pretrain_batch_size,), generator=g)
        batch = data[idx].to(device)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    model.eval()
    return losses


def training_texts(cfg: Config) -> list[str]:
    """Texts the tiny tokenizer and pre-training may see: stage-1 records and ToxiCN train only."""
    from chintox.splits import load_split

    texts: list[str] = []
    for rec in load_split(cfg.data.out_dir, "stage1"):
        texts.extend(m["content"] for m in rec["messages"])
    texts.extend(r["text"] for r in load_split(cfg.data.out_dir, "toxicn_train"))
    return texts


def _capped(texts: list[str], max_chars: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    out, total = [], 0
    for i in order:
        if total >= max_chars:
            break
        out.append(texts[i])
        total += len(texts[i])
    return out


def tiny_tokenizer(cfg: Config, corpus: list[str]) -> Any:
    """The tiny profile's tokenizer: BPE on ``corpus`` plus ``model.tiny.tokenizer_prompt_copies``
    copies of the instruction (0 by default, so the prompt keeps a study-like token length)."""
    prompt = prompt_from_config(cfg)
    copies = cfg.model.tiny.tokenizer_prompt_copies
    return train_tokenizer(corpus + [prompt.instruction] * copies, cfg.model.tiny.vocab_size,
                           must_be_single=[prompt.answer_positive, prompt.answer_negative])


def build_tiny_base(cfg: Config, texts: list[str], out_dir: Path) -> dict[str, Any]:
    """Train the tokenizer, build (and optionally pre-train) the tiny model, save it to ``out_dir``."""
    import torch

    t0 = time.time()
    prompt = prompt_from_config(cfg)
    tcfg = cfg.model.tiny
    corpus = _capped(texts, tcfg.tokenizer_max_chars, cfg.data.seed)
    tokenizer = tiny_tokenizer(cfg, corpus)
    answer_ids = answer_token_ids(tokenizer, prompt)
    model = build_tiny_model(tcfg, tokenizer, seed=cfg.data.seed)
    losses = pretrain(model, tokenizer, corpus, tcfg, pick_device(cfg.train.device), seed=cfg.data.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.float32).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    info = {
        "kind": "tiny",
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "prompt_tokens": len(tokenizer.encode(prompt.instruction, add_special_tokens=False)),
        "tokenizer_prompt_copies": tcfg.tokenizer_prompt_copies,
        "answer_token_ids": list(answer_ids),
        "tokenizer_chars": sum(len(t) for t in corpus),
        "pretrain_steps": tcfg.pretrain_steps,
        "pretrain_final_loss": losses[-1] if losses else None,
    }
    # no wall-clock time in the output: an identical model must hash identically for DVC's run-cache
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=2))
    log.info("tiny base built in %.1fs: %s", time.time() - t0, info)
    return info


def build_rehearsal_model(rcfg: RehearsalModelConfig, tokenizer: Any) -> Any:
    """A randomly initialised Qwen2ForCausalLM laid out as Qwen1.5-Chat's config.json is (special
    token ids, padded vocabulary, RoPE base, no sliding window), at the size in ``model.rehearsal``."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if rcfg.vocab_size < len(tokenizer):
        raise ValueError(f"model.rehearsal.vocab_size {rcfg.vocab_size} < the tokenizer's {len(tokenizer)} tokens")
    torch.manual_seed(rcfg.seed)
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen2Config(
        vocab_size=rcfg.vocab_size, hidden_size=rcfg.hidden_size, intermediate_size=rcfg.intermediate_size,
        num_hidden_layers=rcfg.num_layers, num_attention_heads=rcfg.num_heads,
        num_key_value_heads=rcfg.num_kv_heads, max_position_embeddings=rcfg.max_position_embeddings,
        rope_theta=rcfg.rope_theta, rms_norm_eps=1e-6, hidden_act="silu", initializer_range=0.02,
        tie_word_embeddings=rcfg.tie_word_embeddings, bos_token_id=pad, eos_token_id=eos, pad_token_id=pad,
        use_sliding_window=False, sliding_window=rcfg.max_position_embeddings,
        max_window_layers=rcfg.num_layers,
    )
    model = Qwen2ForCausalLM(config)
    # Qwen1.5-Chat's generation_config.json stops on <|im_end|> or <|endoftext|>; greedy here
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=[eos, pad], pad_token_id=pad,
                                               do_sample=False)
    return model


def build_rehearsal_base(cfg: Config, out_dir: Path) -> dict[str, Any]:
    """Qwen in everything but its weights: Qwen's tokenizer (rebuilt from ``qwen.tiktoken``) and
    Qwen1.5-Chat's template over a random Qwen2 model, saved as a normal Hugging Face folder."""
    import torch

    from chintox.qwen_tokenizer import default_tiktoken_file, qwen_tokenizer, tiktoken_sha256

    t0 = time.time()
    rcfg = cfg.model.rehearsal
    vocab_file = Path(rcfg.tiktoken_file) if rcfg.tiktoken_file else default_tiktoken_file()
    tokenizer = qwen_tokenizer(vocab_file)
    prompt = prompt_from_config(cfg)
    answer_ids = answer_token_ids(tokenizer, prompt)  # one token each in Qwen's vocabulary, or a clear error
    model = build_rehearsal_model(rcfg, tokenizer)
    out_dir.mkdir(parents=True, exist_ok=True)
    # saved in float32 like the tiny base; every later step loads it in model.dtype
    model.to(torch.float32).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    info = {
        "kind": "rehearsal",
        "imitates": rcfg.imitates,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "embedding_rows": rcfg.vocab_size,
        "qwen_tiktoken_sha256": tiktoken_sha256(vocab_file),
        "prompt_tokens": len(tokenizer.encode(prompt.instruction, add_special_tokens=False)),
        "answer_token_ids": list(answer_ids),
    }
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=2))
    log.info("rehearsal base (%s-like, random weights) built in %.1fs: %s", rcfg.imitates, time.time() - t0, info)
    return info


def _clear(out_dir: Path) -> None:
    """Remove what an earlier base of another kind left in ``out_dir`` (DVC clears outs itself)."""
    if out_dir.is_dir():
        for f in out_dir.iterdir():
            if f.is_file():
                f.unlink()


def run_base(cfg: Config) -> Path:
    """The `base` pipeline step. Returns the folder later steps load the base model from."""
    setup_logging()
    out_dir = Path(cfg.paths.models) / "base"
    if cfg.model.base == "tiny":
        _clear(out_dir)
        build_tiny_base(cfg, training_texts(cfg), out_dir)
        return out_dir
    if cfg.model.base == "rehearsal":
        _clear(out_dir)
        build_rehearsal_base(cfg, out_dir)
        return out_dir
    # A real model: check that it loads and fits the detector, then record where it comes from.
    prompt = prompt_from_config(cfg)
    tok = load_tokenizer(cfg.model.base, trust_remote_code=cfg.model.trust_remote_code, revision=cfg.model.revision)
    answer_token_ids(tok, prompt)
    _clear(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / BASE_POINTER).write_text(json.dumps(
        {"model": cfg.model.base, "revision": cfg.model.revision, "trust_remote_code": cfg.model.trust_remote_code},
        indent=2))
    return out_dir


__all__ = ["ModelLoadError", "build_rehearsal_base", "build_tiny_base", "build_tiny_model", "run_base",
           "train_tokenizer"]
