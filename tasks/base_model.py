"""Base-model step: build the `tiny` or the `rehearsal` Qwen2 model, or point at a real one.

``model.base: tiny`` trains a byte-level BPE tokenizer on the training-side texts only (COIG-CQIA
stage-1 records, ToxiCN train and, by default, COLD train without labels; never a validation or
evaluation text: :func:`pretraining_corpus`), builds a small Qwen2-architecture causal LM with a
ChatML chat template, pre-trains it as a causal LM on the same texts (``model.tiny.pretrain_*``;
resumable, bf16 autocast where the CPU computes it), and saves a normal Hugging Face folder that
transformers and vLLM both load. ``model.base: rehearsal`` is Qwen in everything but its weights:
Qwen's real tokenizer (:mod:`chintox.qwen_tokenizer`) and Qwen1.5-Chat's template over a randomly
initialised Qwen2 model at the size in ``model.rehearsal``; later steps cannot tell it from a hub
Qwen1.5 chat model, so the paper recipe runs on it unchanged. Any other ``model.base`` (hub id or
local path) is checked and recorded, with ``model.revision``, in ``base_model.json``; later steps load
it from there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Iterable, Iterator
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


def _pack(tokenizer: Any, texts: list[str], seq_len: int, seed: int) -> Any:
    """The corpus as one token stream (texts in a seeded order, each ended by EOS), cut into
    ``seq_len``-token rows; the tail shorter than one row is dropped."""
    import torch

    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    eos = tokenizer.eos_token_id
    ids = tokenizer([texts[i] for i in order], add_special_tokens=False)["input_ids"]
    stream = [t for row in ids for t in (*row, eos)]
    n_seq = len(stream) // seq_len
    if n_seq < 1:
        raise ValueError(f"the pre-training corpus has {len(stream)} tokens, fewer than one sequence "
                         f"of model.tiny.pretrain_seq_len={seq_len}")
    return torch.tensor(stream[: n_seq * seq_len], dtype=torch.long).view(n_seq, seq_len)


def perplexity(model: Any, tokenizer: Any, texts: list[str], max_len: int, batch_size: int = 32) -> float:
    """Per-token perplexity of ``model`` on ``texts``, each scored on its own (EOS-ended, cut at
    ``max_len`` tokens), in float32 without autocast so that runs of any precision compare."""
    import torch

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows = [(r + [eos])[:max_len] for r in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    rows = [r for r in rows if len(r) > 1]
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = rows[i: i + batch_size]
            width = max(len(r) for r in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            lab = torch.full((len(batch), width), -100, dtype=torch.long)
            att = torch.zeros((len(batch), width), dtype=torch.long)
            for j, r in enumerate(batch):
                ids[j, : len(r)] = lab[j, : len(r)] = torch.tensor(r)
                att[j, : len(r)] = 1
            logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits.float()
            tgt = lab[:, 1:].to(dev)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                     tgt.reshape(-1), ignore_index=-100, reduction="sum")
            nll += float(loss)
            n += int((tgt != -100).sum())
    model.train(was_training)
    if n == 0:
        raise ValueError(f"held-out perplexity: none of the {len(texts)} texts gives a token to predict")
    return math.exp(nll / n)


def pretrain(cfg: Config, model: Any, tokenizer: Any, texts: list[str], heldout: list[str],
             corpus_hash: str) -> dict[str, Any]:
    """Causal-LM pre-training of the whole tiny model for ``model.tiny.pretrain_steps`` steps on packed
    ``texts``, through the resumable training loop (checkpoints under ``<paths.checkpoints>/pretrain``,
    SIGTERM honoured, exact resume), with bf16 autocast where ``pretrain_precision`` asks for it and the
    device computes it natively. The LM loss goes to MLflow (run ``base``); the held-out perplexity on
    ``heldout`` (ToxiCN val texts) is measured before and after. Returns the figures for build_info."""
    import hashlib

    import torch

    from chintox.modeling import cpu_supports_bf16
    from chintox.tracking import stage_run
    from chintox.training.checkpoint import CheckpointManager
    from chintox.training.loop import LoopSpec, SingleProcess, load_trainable_state, run_loop

    tcfg = cfg.model.tiny
    device = pick_device(cfg.train.device)
    native = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_supports_bf16()
    bf16 = tcfg.pretrain_precision == "bf16" and native
    if tcfg.pretrain_precision == "bf16" and not bf16:
        log.warning("model.tiny.pretrain_precision bf16 -> float32: this %s has no native bfloat16", device)
    accelerator = SingleProcess(device, bf16)
    compiled = _use_compile(tcfg.pretrain_compile, device)
    t0 = time.time()
    data = _pack(tokenizer, texts, tcfg.pretrain_seq_len, cfg.data.seed)
    n_seq, bsz = data.size(0), tcfg.pretrain_batch_size
    need = tcfg.pretrain_steps * bsz
    # the sequences the steps draw from: seeded passes over the corpus, as many as the steps need
    g = torch.Generator().manual_seed(cfg.data.seed)
    rows = torch.cat([torch.randperm(n_seq, generator=g) for _ in range(-(-need // n_seq))])[:need]
    model.to(accelerator.device)
    ppl_before = perplexity(model, tokenizer, heldout, tcfg.pretrain_seq_len)
    log.info("pre-training corpus: %d texts, %d sequences of %d tokens (%.1fs to pack); %d steps of %d "
             "sequences = %.2f passes; held-out perplexity before: %.1f", len(texts), n_seq,
             tcfg.pretrain_seq_len, time.time() - t0, tcfg.pretrain_steps, bsz, need / n_seq, ppl_before)
    dev = accelerator.device

    # every batch has the same shape, so a compiled forward (and its backward) is built once; it shares
    # the model's parameters, so the loop's optimizer, checkpoints and saved weights are the model's own
    forward = torch.compile(model, dynamic=False) if compiled else model

    def loss_fn(m: Any, idx: list[int]) -> tuple[Any, int]:
        batch = data[rows[idx]].to(dev)
        return forward(input_ids=batch, labels=batch).loss, batch.numel()

    chash = hashlib.sha256(json.dumps(
        {"tiny": {k: v for k, v in vars(tcfg).items()
                  if k not in ("pretrain_save_every_steps", "pretrain_compile")},
         "corpus": corpus_hash, "seed": cfg.data.seed, "bf16": bf16, "compiled": compiled,
         # the token ids the checkpoints were trained on: a resume with another tokenizer starts afresh
         "tokenizer": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()},
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    ckpts = CheckpointManager(Path(cfg.paths.checkpoints) / "pretrain", 2, chash)
    with stage_run(cfg, "base", tags={"config_hash": chash}) as run:
        import mlflow

        def log_metrics(metrics: dict[str, float], step: int) -> None:
            if run is not None:
                mlflow.log_metrics({f"lm_{k}": float(v) for k, v in metrics.items()}, step=step)

        if run is not None:
            mlflow.log_params({f"model.tiny.{k}": v for k, v in vars(tcfg).items()}
                              | {"pretrain_corpus_sha256": corpus_hash, "pretrain_texts": len(texts),
                                 "pretrain_sequences": n_seq, "bf16_autocast": bf16, "compiled": compiled})
        spec = LoopSpec(n_examples=need, batch_size=bsz, grad_accum=1, epochs=1, lr=tcfg.pretrain_lr,
                        warmup_ratio=tcfg.pretrain_warmup_ratio, weight_decay=0.01,
                        save_every_steps=tcfg.pretrain_save_every_steps, seed=cfg.data.seed, loss_fn=loss_fn,
                        log_metrics=log_metrics, desc="pre-train tiny base")
        t1 = time.time()
        with _deterministic(compiled, device):
            result = run_loop(model, spec, ckpts, accelerator)
        train_s = time.time() - t1
        load_trainable_state(model, result["best_state"])
        ppl_after = perplexity(model, tokenizer, heldout, tcfg.pretrain_seq_len)
        figures = {"heldout_perplexity_before": round(ppl_before, 3),
                   "heldout_perplexity_after": round(ppl_after, 3)}
        if run is not None:
            mlflow.log_metrics({**figures, "pretrain_seconds": train_s})
    ckpts.clear()
    model.eval()
    log.info("pre-trained %d steps in %.0fs; held-out perplexity %.1f -> %.1f%s", tcfg.pretrain_steps,
             train_s, ppl_before, ppl_after,
             f" (resumed from {result['resumed_from']})" if result["resumed_from"] else "")
    return {"pretrain_tokens": need * tcfg.pretrain_seq_len, "pretrain_passes": round(need / n_seq, 4),
            "pretrain_sequences_available": n_seq, "pretrain_bf16_autocast": bf16, "pretrain_compiled": compiled,
            **figures,
            "heldout_texts": len(heldout)}


@contextlib.contextmanager
def _deterministic(on: bool, device: str) -> Iterator[None]:
    """Deterministic kernels while ``on``: inductor's CPU backward otherwise accumulates (the embedding
    gradient) in thread order, so two compiled runs, or a resumed and an uninterrupted one, differ in
    the last bits. Eager CPU kernels are deterministic already. On CUDA only a warning where a kernel
    has no deterministic form (cuBLAS needs an environment variable set before start-up): exact resume
    is promised on a CPU. The process-wide flag is restored."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    if on:
        torch.use_deterministic_algorithms(True, warn_only=device.startswith("cuda"))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _use_compile(choice: str, device: str) -> bool:
    """``model.tiny.pretrain_compile`` resolved on this machine: always (an error if inductor cannot
    build kernels here), never, or auto (compiled where it can, else eager, said in the log)."""
    from chintox.modeling import inductor_available

    if choice == "never":
        return False
    ok, why = inductor_available(device)
    if ok:
        return True
    if choice == "always":
        raise RuntimeError(f"model.tiny.pretrain_compile is 'always' but torch.compile cannot run on this "
                           f"{device}: {why}. Install it, or set model.tiny.pretrain_compile to auto or never")
    log.info("pre-training eager (model.tiny.pretrain_compile auto): %s", why)
    return False


def corpus_sha256(texts: Iterable[str]) -> str:
    """The pre-training corpus's identity (a detector's lineage names it): sha256 over the texts, in
    order, each followed by a NUL byte."""
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def pretraining_corpus(cfg: Config) -> tuple[list[str], dict[str, Any]]:
    """The texts the tiny tokenizer and pre-training may see, and what they are.

    COIG-CQIA's stage-1 records (every user and assistant turn), ToxiCN train's texts and, when
    ``model.tiny.pretrain_cold_train``, COLD train's texts (no labels). Never a validation or
    evaluation text: any text whose normalised form is that of a ToxiCN val/test or COLD test text is
    left out here (the split step already drops most; this is the rule's last guard), and counted.
    The returned record holds, per source, texts kept and left out, characters, and the corpus's
    sha256 (over the kept texts in order), which goes into the base's ``build_info.json``.
    """

    from chintox.splits import HELD_OUT_SPLITS, load_split
    from chintox.textnorm import normalise_many

    out = cfg.data.out_dir
    sources: dict[str, list[str]] = {
        "coig_cqia": [m["content"] for rec in load_split(out, "stage1") for m in rec["messages"]],
        "toxicn_train": [r["text"] for r in load_split(out, "toxicn_train")],
    }
    if cfg.model.tiny.pretrain_cold_train:
        sources["cold_train"] = [r["text"] for r in load_split(out, "cold_train")]
    held = {t for name in HELD_OUT_SPLITS for t in normalise_many([r["text"] for r in load_split(out, name)]) if t}
    texts: list[str] = []
    record: dict[str, Any] = {"sources": {}}
    for name, items in sources.items():
        keys = normalise_many(items)
        keep = [t for t, n in zip(items, keys) if n and n not in held]
        leaked = sum(1 for n in keys if n and n in held)
        record["sources"][name] = {"texts": len(keep), "left_out_held_out_text": leaked,
                                   "left_out_empty": len(items) - len(keep) - leaked,
                                   "chars": sum(len(t) for t in keep)}
        if leaked:
            log.warning("pre-training corpus: %d %s texts left out: each is a validation or evaluation "
                        "text (normalised match)", leaked, name)
        texts.extend(keep)
    record["sha256"] = corpus_sha256(texts)
    record["texts"] = len(texts)
    record["chars"] = sum(len(t) for t in texts)
    return texts, record


DOMAIN_SOURCES = ("toxicn_train", "cold_train")  # the detector's own kind of text, in the corpus unlabelled


def pretraining_stream(texts: list[str], corpus: dict[str, Any], repeat: int) -> list[str]:
    """The texts pre-training packs: ``texts`` (:func:`pretraining_corpus`, source by source, as its
    record ``corpus`` counts them) once each, and the texts of :data:`DOMAIN_SOURCES` ``repeat``
    times in all (``model.tiny.pretrain_domain_repeat``): the steps spend more of their tokens on the
    kind of text the detector judges. Only training-side texts are repeated; none is added."""
    if repeat == 1:
        return texts
    sources = corpus.get("sources")
    if not sources or sum(v["texts"] for v in sources.values()) != len(texts):
        raise ValueError("model.tiny.pretrain_domain_repeat > 1 needs the corpus record of pretraining_corpus "
                         "(per-source counts adding up to the texts)")
    domain: list[str] = []
    at = 0
    for name, v in sources.items():
        if name in DOMAIN_SOURCES:
            domain += texts[at: at + v["texts"]]
        at += v["texts"]
    return texts + domain * (repeat - 1)


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


def build_tiny_base(cfg: Config, texts: list[str], out_dir: Path,
                    corpus: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the tokenizer, build (and, with ``model.tiny.pretrain_steps``, pre-train) the tiny model,
    save it to ``out_dir``. ``texts`` is the training-side corpus (:func:`pretraining_corpus`, whose
    record ``corpus`` describes it); the held-out perplexity is measured on ToxiCN val's texts."""

    import torch

    from chintox.splits import load_split

    t0 = time.time()
    prompt = prompt_from_config(cfg)
    tcfg = cfg.model.tiny
    if corpus is None:
        corpus = {"sha256": corpus_sha256(texts), "texts": len(texts), "chars": sum(len(t) for t in texts)}
    tok_corpus = _capped(texts, tcfg.tokenizer_max_chars, cfg.data.seed)
    tokenizer = tiny_tokenizer(cfg, tok_corpus)
    answer_ids = answer_token_ids(tokenizer, prompt)
    model = build_tiny_model(tcfg, tokenizer, seed=cfg.data.seed)
    pretrained: dict[str, Any] = {}
    if tcfg.pretrain_steps > 0:
        heldout = [r["text"] for r in load_split(cfg.data.out_dir, "toxicn_val")]
        stream = pretraining_stream(texts, corpus, tcfg.pretrain_domain_repeat)
        pretrained = pretrain(cfg, model, tokenizer, stream, heldout, corpus["sha256"])
        pretrained |= {"pretrain_domain_repeat": tcfg.pretrain_domain_repeat, "pretrain_stream_texts": len(stream)}
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
        "tokenizer_chars": sum(len(t) for t in tok_corpus),
        "pretrain_steps": tcfg.pretrain_steps,
        "pretrain_corpus": corpus,
        **pretrained,
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
        texts, corpus = pretraining_corpus(cfg)
        build_tiny_base(cfg, texts, out_dir, corpus)
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


__all__ = ["ModelLoadError", "build_rehearsal_base", "build_tiny_base", "build_tiny_model", "perplexity",
           "pretraining_corpus", "pretraining_stream", "run_base",
           "train_tokenizer"]
