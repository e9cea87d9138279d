"""Training steps: stage 1 (LoRA SFT on COIG-CQIA, merged) and stage 2 (LoRA detector on ToxiCN).

Stage 1 teaches the base general Chinese instruction following; its adapter is merged into the base,
giving the stage-1 model (``<paths.models>/stage1``). With ``train.stage1.enabled: false`` stage 1
writes only a pointer to the base, so the study's two rows ("ToxiCN" and "COIG-CQIA & ToxiCN") are one
parameter apart and stage 2 does not change.

Stage 2 trains a fresh LoRA on ToxiCN train with the study's prompt: the loss is the cross-entropy of
the answer token ('是' toxic / '否' not) at the answer position -- the first token of the assistant
turn -- computed through ``chintox.prefix`` (the ~270-token instruction is run once per batch, not once
per text). ToxiCN val is scored after every epoch; the kept epoch is the best on
``train.stage2.select_metric`` and the decision threshold is the one maximising val F1. Test sets are
never read here.

The loop (``chintox.training.loop``) is explicit and resumable; see its docstring. Stage 2's data,
loss and validation scoring are in ``chintox.training.stage2``; the detector folder's ``detector.json``
is a :class:`chintox.card.DetectorCard`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chintox.card import (
    LINEAGE_FEEDBACK_HOLDOUT,
    LINEAGE_FEEDBACK_STORE,
    LINEAGE_FEEDBACK_TRAIN,
    LINEAGE_PRETRAIN_CORPUS,
    LINEAGE_STAGE1_DATA,
    LINEAGE_TRAIN,
    LINEAGE_UPSTREAM,
    LINEAGE_UPSTREAM_DIR,
    LINEAGE_VAL,
    DetectorCard,
)
from chintox.config import Config, StageConfig
from chintox.metrics import binary_metrics, tune_threshold
from chintox.modeling import (
    BASE_POINTER,
    ModelLoadError,
    load_model,
    load_tokenizer,
    model_window,
    resolve_model_ref,
)
from chintox.provenance import dir_sha256, file_sha256
from chintox.training.stage2 import Stage2Data, answer_loss, score_texts

log = logging.getLogger("chintox.train")

VAL_METRICS_FILE = "val_metrics.json"


# ----------------------------------------------------------------------------- helpers


def _setup_logging() -> None:
    if not logging.getLogger("chintox").handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger("chintox").addHandler(h)
        logging.getLogger("chintox").setLevel(logging.INFO)


def load_records(cfg: Config, name: str) -> list[dict]:
    """One split (``<data.out_dir>/splits/<name>.jsonl``), through ``chintox.splits.load_split``."""
    from chintox.splits import load_split

    return load_split(cfg.data.out_dir, name)


def _subsample(records: list[dict], n: int | None, seed: int) -> list[dict]:
    if n is None or n >= len(records):
        return records
    rng = random.Random(seed)
    idx = sorted(rng.sample(range(len(records)), n))
    return [records[i] for i in idx]


def _folder_fingerprint(ref: str) -> str:
    """Identity of an upstream model: its files' sha256 when local and small, else its name and sizes."""
    p = Path(ref)
    if not p.is_dir():
        return ref
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        if f.is_file() and f.suffix in {".json", ".safetensors", ".txt", ".jinja"}:
            h.update(f.relative_to(p).as_posix().encode())
            if f.stat().st_size < 512 << 20:
                h.update(f.read_bytes())
            else:
                h.update(str(f.stat().st_size).encode())
    return h.hexdigest()


def config_hash(cfg: Config, stage: str, upstream: str, data_files: list[Path],
                extra: dict[str, Any] | None = None) -> str:
    """Hash of everything that decides a stage's result: its params, the model/data sections, the
    prompt, the upstream model's files and the split files it reads. Checkpoints carry it, so a
    changed parameter never resumes a stale run."""
    sc: StageConfig = getattr(cfg.train, stage)
    payload = {
        "stage": stage, "stage_cfg": asdict(sc), "model": asdict(cfg.model), "seed": cfg.train_seed,
        "device": cfg.train.device,
        "upstream": _folder_fingerprint(upstream),
        "data": [hashlib.sha256(f.read_bytes()).hexdigest() for f in data_files if f.is_file()],
    }
    if stage == "stage2":
        payload["prompt"] = Path(cfg.model.prompt_file).read_bytes().hex()
    if extra:
        payload["extra"] = extra
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _split_file(cfg: Config, name: str) -> Path:
    from chintox.splits import split_path

    return split_path(cfg.data.out_dir, name)  # type: ignore[arg-type]


def _accelerator(cfg: Config) -> Any:
    from accelerate import Accelerator

    from chintox.modeling import pick_device

    device = pick_device(cfg.train.device)
    mp = "bf16" if (cfg.model.dtype == "bfloat16" and device == "cuda") else "no"
    return Accelerator(cpu=(device == "cpu"), mixed_precision=mp)


def _peft_model(model: Any, sc: StageConfig) -> Any:
    """Fresh LoRA adapter on all ``target_modules``; ``modules_to_save`` get trainable full copies.

    When the base ties input embeddings and LM head (the tiny base does) and both are in
    ``modules_to_save``, ``ensure_weight_tying`` keeps the two trained copies one tensor, as in the
    base, so the merged model saves and reloads as a tied model.
    """
    from peft import LoraConfig, get_peft_model

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    cfg = LoraConfig(
        r=sc.lora_r, lora_alpha=sc.lora_alpha, lora_dropout=sc.lora_dropout,
        target_modules=list(sc.target_modules), modules_to_save=list(sc.modules_to_save) or None,
        task_type="CAUSAL_LM", ensure_weight_tying=tied and bool(sc.modules_to_save),
    )
    pm = get_peft_model(model, cfg)
    if sc.gradient_checkpointing:
        pm.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        pm.enable_input_require_grads()
    return pm


def _train_dtype(cfg: Config, accelerator: Any) -> str:
    """The dtype the model is trained in (and the detector served in): ``model.dtype`` on a GPU; on a
    CPU bfloat16 where it computes it natively, else float32 (said in the log). LoRA weights and
    trainable copies stay float32 either way (peft's default)."""
    from chintox.modeling import resolve_dtype

    dtype, why = resolve_dtype(cfg.model.dtype, accelerator.device.type)
    if why:
        log.warning("%s", why)
    return dtype


def base_identity(cfg: Config) -> tuple[str, str]:
    """(id, revision) of the root base model under ``<paths.models>/base``: a hub id and the revision
    the pointer pins (``main`` when none), or ``built:<kind>`` and ``sha256:<content hash>`` for a base
    the base step built."""
    base_dir = Path(cfg.paths.models) / "base"
    pointer = base_dir / BASE_POINTER
    if pointer.is_file():
        info = json.loads(pointer.read_text(encoding="utf-8"))
        return str(info["model"]), str(info.get("revision") or "main")
    built = base_dir / "build_info.json"
    kind = json.loads(built.read_text(encoding="utf-8")).get("kind", "model") if built.is_file() else "model"
    return f"built:{kind}", f"sha256:{dir_sha256(base_dir)}"


def _load_upstream(cfg: Config, ref: str, accelerator: Any) -> tuple[Any, Any]:
    tok = load_tokenizer(ref, trust_remote_code=cfg.model.trust_remote_code)
    model = load_model(ref, dtype=_train_dtype(cfg, accelerator), device=str(accelerator.device),
                       trust_remote_code=cfg.model.trust_remote_code)
    return tok, model


def _mlflow_params(cfg: Config, stage: str, extra: dict[str, Any]) -> dict[str, Any]:
    sc = asdict(getattr(cfg.train, stage))
    flat = {f"{stage}.{k}": (",".join(v) if isinstance(v, list) else v) for k, v in sc.items()}
    flat.update({"model.base": cfg.model.base, "model.dtype": cfg.model.dtype, "profile": cfg.profile,
                 "train.seed": cfg.train_seed})
    flat.update(extra)
    return flat


def _logger(run_active: bool) -> Any:
    import mlflow

    def log_metrics(metrics: dict[str, float], step: int) -> None:
        if run_active:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    return log_metrics


def _atomic_dir(final: Path) -> Path:
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, final: Path) -> None:
    # PEFT writes target_modules from a set, in an order that changes with Python's hash seed: sort it,
    # so the same run gives the same bytes (DVC hashes the folder)
    for f in tmp.rglob("adapter_config.json"):
        conf = json.loads(f.read_text(encoding="utf-8"))
        for key in ("target_modules", "modules_to_save"):
            if isinstance(conf.get(key), list):
                conf[key] = sorted(conf[key])
        f.write_text(json.dumps(conf, indent=2, sort_keys=True), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _save_merged(peft_model: Any, tokenizer: Any, out: Path) -> None:
    """Merge the adapter into (a copy of) the base and save a plain HF folder (safetensors)."""
    import copy

    import torch

    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged.to("cpu")
    if getattr(merged.config, "tie_word_embeddings", False):
        merged.tie_weights()
    with torch.no_grad():
        merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


# ----------------------------------------------------------------------------- stage 1


def _stage1_example(tokenizer: Any, messages: list[dict], max_len: int) -> tuple[list[int], list[int]] | None:
    """Token ids and labels of one chat record: only assistant tokens (and their end-of-turn) are
    learned; user/system tokens get -100. Returns None when truncation leaves no assistant token."""
    ids: list[int] = []
    labels: list[int] = []
    for i, m in enumerate(messages):
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False) if i else ""
        if m["role"] == "assistant":
            opened = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            head = tokenizer.encode(opened[len(before):], add_special_tokens=False)
            ids += head
            labels += [-100] * len(head)
            upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            body = tokenizer.encode(upto[len(opened):], add_special_tokens=False)
            ids += body
            labels += body
        else:
            upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            part = tokenizer.encode(upto[len(before):], add_special_tokens=False)
            ids += part
            labels += [-100] * len(part)
    ids, labels = ids[:max_len], labels[:max_len]
    if all(x == -100 for x in labels[1:]):
        return None
    return ids, labels


def run_stage1(cfg: Config, out: Path | None = None, run_name: str = "stage1") -> Path:
    """The `stage1` step: LoRA SFT on the stage-1 chat records, merged into the base.

    Output ``out`` (default ``<paths.models>/stage1``): the merged HF folder (+ ``adapter/``), or,
    when ``train.stage1.enabled`` is false, only a ``base_model.json`` pointer to the base.
    Checkpoints go to ``<paths.checkpoints>/<run_name>``.
    """
    _setup_logging()
    sc = cfg.train.stage1
    base_dir = Path(cfg.paths.models) / "base"
    out = Path(out) if out else Path(cfg.paths.models) / "stage1"
    base_ref = resolve_model_ref(base_dir)  # clear error when the base step has not run
    if not sc.enabled:
        tmp = _atomic_dir(out)
        base_info = json.loads((base_dir / BASE_POINTER).read_text()) if (base_dir / BASE_POINTER).is_file() \
            else {"model": str(base_dir)}
        (tmp / BASE_POINTER).write_text(json.dumps(
            {"model": base_info["model"], "revision": base_info.get("revision"),
             "trust_remote_code": cfg.model.trust_remote_code, "stage1_enabled": False}, indent=2))
        _publish(tmp, out)
        log.info("stage 1 disabled: %s points at the base model %s", out, base_info["model"])
        return out

    import torch

    from chintox.tracking import stage_run
    from chintox.training.checkpoint import CheckpointManager
    from chintox.training.loop import LoopSpec, load_trainable_state, run_loop

    accelerator = _accelerator(cfg)
    torch.manual_seed(cfg.train_seed)
    tok, model = _load_upstream(cfg, base_ref, accelerator)
    records = _subsample(load_records(cfg, "stage1"), sc.max_samples, cfg.train_seed)
    examples = [e for r in records if (e := _stage1_example(tok, r["messages"], sc.max_seq_len))]
    if not examples:
        raise ValueError("no stage-1 example keeps an assistant token within max_seq_len")
    pm = _peft_model(model, sc)
    chash = config_hash(cfg, "stage1", base_ref, [_split_file(cfg, "stage1")])
    ckpts = CheckpointManager(Path(cfg.paths.checkpoints) / run_name, sc.keep_checkpoints, chash)
    pad = tok.pad_token_id
    dev = accelerator.device

    def loss_fn(m: Any, idx: list[int]) -> tuple[Any, int]:
        batch = [examples[i] for i in idx]
        width = max(len(x) for x, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        lab = torch.full((len(batch), width), -100, dtype=torch.long)
        att = torch.zeros((len(batch), width), dtype=torch.long)
        for j, (x, y) in enumerate(batch):
            ids[j, : len(x)], lab[j, : len(y)], att[j, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        out = m(input_ids=ids.to(dev), attention_mask=att.to(dev), labels=lab.to(dev))
        return out.loss, int(att.sum())

    with stage_run(cfg, run_name, tags={"config_hash": chash}) as run:
        import mlflow

        mlflow.log_params(_mlflow_params(cfg, "stage1", {"examples": len(examples), "config_hash": chash}))
        spec = LoopSpec(
            n_examples=len(examples), batch_size=sc.batch_size, grad_accum=sc.grad_accum, epochs=sc.epochs,
            lr=sc.lr, warmup_ratio=sc.warmup_ratio, weight_decay=sc.weight_decay,
            save_every_steps=sc.save_every_steps, seed=cfg.train_seed, loss_fn=loss_fn,
            log_metrics=_logger(run is not None), desc="stage1", lengths=[len(x) for x, _ in examples])
        t0 = time.time()
        result = run_loop(pm, spec, ckpts, accelerator)
        load_trainable_state(pm, result["best_state"])
        if accelerator.is_main_process:
            tmp = _atomic_dir(out)
            pm.peft_config["default"].base_model_name_or_path = str(base_dir)
            pm.save_pretrained(tmp / "adapter")
            _save_merged(pm, tok, tmp)
            # no wall-clock time or resume point in it: the same inputs give the same bytes
            (tmp / "train_info.json").write_text(json.dumps({
                "base_model": str(base_dir), "config_hash": chash, "examples": len(examples),
                "history": result["history"],
                "lineage": {LINEAGE_STAGE1_DATA: file_sha256(_split_file(cfg, "stage1"))}}, indent=2))
            _publish(tmp, out)
            mlflow.log_artifacts(str(out / "adapter"), artifact_path="adapter")
            mlflow.log_metric("train_seconds", time.time() - t0)
    return out


# ----------------------------------------------------------------------------- stage 2


def _feedback_files(cfg: Config) -> dict[str, Path]:
    from chintox.feedback import HOLDOUT_FILE, SOURCE_FILE, TRAIN_FILE, sets_path

    return {k: sets_path(cfg.data.out_dir, k) for k in (TRAIN_FILE, HOLDOUT_FILE, SOURCE_FILE)}


def _feedback_records(cfg: Config) -> list[dict]:
    """The feedback train rows stage 2 adds (each ``feedback.repeat`` times), from the feedback sets
    (DVC stage ``feedback``); a missing set is an error, an empty one a warning."""
    from chintox.feedback import TRAIN_FILE, load_feedback_set

    files = _feedback_files(cfg)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"feedback.train is on but {missing} do not exist: run `dvc repro feedback` "
                                "(or `chintox feedback-sets`) first")
    rows = load_feedback_set(cfg.data.out_dir, TRAIN_FILE)
    if not rows:
        log.warning("feedback.train is on but %s holds no corrections: training on ToxiCN train only",
                    files[TRAIN_FILE])
    log.info("stage 2 adds %d feedback rows x %d (feedback.repeat)", len(rows), cfg.feedback.repeat)
    return [{"text": r["text"], "label": int(r["label"])} for r in rows] * cfg.feedback.repeat


def _lineage(cfg: Config, stage1_dir: Path, upstream: str, feedback: bool = False) -> dict[str, str]:
    """What the detector was trained and validated on, by content: sha256 of the ToxiCN train and val
    split files, of the upstream folder it was given (``model.stage1``) and of the model it actually
    loaded (``model.upstream``: the base behind a stage-1 pointer; ``hub:<id>`` for a hub model), and
    the stage-1 records' hash that stage 1 recorded when it ran. With ``feedback``: the feedback train
    set it trained on, the holdout it did not, and the store version both came from."""
    lineage = {LINEAGE_TRAIN: file_sha256(_split_file(cfg, "toxicn_train")),
               LINEAGE_VAL: file_sha256(_split_file(cfg, "toxicn_val")),
               LINEAGE_UPSTREAM_DIR: dir_sha256(stage1_dir)}
    up = Path(upstream)
    if up.resolve() == stage1_dir.resolve():
        lineage[LINEAGE_UPSTREAM] = lineage[LINEAGE_UPSTREAM_DIR]
    else:
        lineage[LINEAGE_UPSTREAM] = dir_sha256(up) if up.is_dir() else f"hub:{upstream}"
    built = Path(cfg.paths.models) / "base" / "build_info.json"  # the root base (as base_identity reads it)
    if built.is_file():
        base_info = json.loads(built.read_text(encoding="utf-8"))
        if base_info.get("pretrain_steps") and base_info.get("pretrain_corpus"):
            lineage[LINEAGE_PRETRAIN_CORPUS] = str(base_info["pretrain_corpus"]["sha256"])
    info = stage1_dir / "train_info.json"
    if info.is_file():
        recorded = json.loads(info.read_text(encoding="utf-8")).get("lineage", {})
        if LINEAGE_STAGE1_DATA in recorded:
            lineage[LINEAGE_STAGE1_DATA] = recorded[LINEAGE_STAGE1_DATA]
    if feedback:
        from chintox.feedback import HOLDOUT_FILE, SOURCE_FILE, TRAIN_FILE

        files = _feedback_files(cfg)
        lineage[LINEAGE_FEEDBACK_TRAIN] = file_sha256(files[TRAIN_FILE])
        lineage[LINEAGE_FEEDBACK_HOLDOUT] = file_sha256(files[HOLDOUT_FILE])
        source = json.loads(files[SOURCE_FILE].read_text(encoding="utf-8"))
        lineage[LINEAGE_FEEDBACK_STORE] = str(source["store_sha256"])
    return dict(sorted(lineage.items()))


def run_stage2(cfg: Config, stage1_dir: Path | None = None, out: Path | None = None,
               run_name: str = "stage2", feedback: bool | None = None) -> Path:
    """The `stage2` step: a fresh LoRA on ToxiCN train over ``stage1_dir`` (default
    ``<paths.models>/stage1``); the detector folder ``out`` (default ``<paths.models>/stage2``).

    ``feedback`` (default: ``feedback.train`` for the pipeline's own detector, never for Table 1's arm):
    the feedback train set (moderators' corrections, DVC stage ``feedback``) is added to ToxiCN train,
    each row ``feedback.repeat`` times; the card's lineage names the feedback sets and store version.

    Folder contract: ``merged/`` (HF model + tokenizer, safetensors), ``adapter/`` (peft, relative
    to the stage-1 model), ``prompt.txt``, ``detector.json`` (a :class:`DetectorCard`, with the
    lineage of :func:`_lineage`) and ``val_metrics.json``. Checkpoints go
    to ``<paths.checkpoints>/<run_name>``; only the pipeline's own detector (the default ``out``)
    writes the DVC metric ``<paths.reports>/stage2_val_metrics.json``.
    """
    _setup_logging()
    import torch

    from chintox.prefix import answer_logits
    from chintox.prompting import prompt_from_config
    from chintox.tracking import stage_run
    from chintox.training.checkpoint import CheckpointManager
    from chintox.training.loop import LoopSpec, load_trainable_state, run_loop

    sc = cfg.train.stage2
    stage1_dir = Path(stage1_dir) if stage1_dir else Path(cfg.paths.models) / "stage1"
    own = out is None
    out = Path(out) if out else Path(cfg.paths.models) / "stage2"
    upstream = resolve_model_ref(stage1_dir)
    stage1_enabled = not (stage1_dir / BASE_POINTER).is_file()
    accelerator = _accelerator(cfg)
    torch.manual_seed(cfg.train_seed)
    tok, model = _load_upstream(cfg, upstream, accelerator)
    prompt = prompt_from_config(cfg)
    use_feedback = (own and cfg.feedback.train) if feedback is None else feedback
    train_recs = _subsample(load_records(cfg, "toxicn_train"), sc.max_samples, cfg.train_seed)
    fb_recs = _feedback_records(cfg) if use_feedback else []
    train_recs = train_recs + fb_recs
    val_recs = load_records(cfg, "toxicn_val")
    train = Stage2Data(tok, prompt, train_recs, sc.max_seq_len)
    val = Stage2Data(tok, prompt, val_recs, sc.max_seq_len)
    pm = _peft_model(model, sc)
    data_files = [_split_file(cfg, "toxicn_train"), _split_file(cfg, "toxicn_val")]
    extra = None
    if use_feedback:  # only then: a pipeline without feedback keeps its checkpoints' hash
        from chintox.feedback import TRAIN_FILE

        data_files.append(_feedback_files(cfg)[TRAIN_FILE])
        extra = {"feedback_repeat": cfg.feedback.repeat}
    chash = config_hash(cfg, "stage2", upstream, data_files, extra)
    ckpts = CheckpointManager(Path(cfg.paths.checkpoints) / run_name, sc.keep_checkpoints, chash)
    prefix = torch.tensor(train.prefix_ids)

    def loss_fn(m: Any, idx: list[int]) -> tuple[Any, int]:
        ids, lengths, y = train.batch(idx)
        logits = answer_logits(m, prefix, ids, lengths)
        return answer_loss(logits, y, train.pos_id, train.neg_id, sc.loss), int(lengths.sum()) + len(idx) * len(prefix)

    def evaluate(m: Any) -> dict[str, float]:
        scores, vloss = score_texts(m, val, max(sc.batch_size, 32), desc="stage2 val", loss_kind=sc.loss)
        return {**binary_metrics(val.labels, scores), "loss": vloss}

    with stage_run(cfg, run_name, tags={"config_hash": chash}) as run:
        import mlflow

        mlflow.log_params(_mlflow_params(cfg, "stage2", {
            "train_examples": len(train.texts), "val_examples": len(val.texts), "config_hash": chash,
            "feedback_examples": len(fb_recs),
            "stage1_enabled": stage1_enabled, "prompt_tokens": len(train.prefix_ids)}))
        spec = LoopSpec(
            n_examples=len(train.texts), batch_size=sc.batch_size, grad_accum=sc.grad_accum, epochs=sc.epochs,
            lr=sc.lr, warmup_ratio=sc.warmup_ratio, weight_decay=sc.weight_decay,
            save_every_steps=sc.save_every_steps, seed=cfg.train_seed, loss_fn=loss_fn, evaluate=evaluate,
            select_metric=sc.select_metric, log_metrics=_logger(run is not None), desc="stage2",
            lengths=[len(t) for t in train.texts])
        t0 = time.time()
        result = run_loop(pm, spec, ckpts, accelerator)
        load_trainable_state(pm, result["best_state"])
        if not accelerator.is_main_process:
            return out
        scores, vloss = score_texts(pm, val, max(sc.batch_size, 32), desc="stage2 threshold", loss_kind=sc.loss)
        threshold = tune_threshold(val.labels, scores, "f1")
        val_metrics = {**binary_metrics(val.labels, scores), "loss": vloss}
        val_tuned = binary_metrics(val.labels, scores, threshold)
        tmp = _atomic_dir(out)
        pm.peft_config["default"].base_model_name_or_path = str(stage1_dir)
        pm.save_pretrained(tmp / "adapter")
        _save_merged(pm, tok, tmp / "merged")
        shutil.copyfile(cfg.model.prompt_file, tmp / "prompt.txt")
        metrics_out = {"selected_epoch": result["best"]["epoch"], "threshold": threshold,
                       "at_0.5": val_metrics, "at_threshold": val_tuned, "history": result["history"]}
        (tmp / VAL_METRICS_FILE).write_text(json.dumps(metrics_out, indent=2))
        base_id, base_rev = base_identity(cfg)
        card = DetectorCard(
            base_model=str(stage1_dir), base_model_resolved=upstream, stage1_enabled=stage1_enabled,
            profile=cfg.profile, answer_positive=prompt.answer_positive,
            answer_negative=prompt.answer_negative, prompt_sha256=prompt.sha256,
            threshold=threshold, threshold_default=0.5, max_seq_len=sc.max_seq_len,
            val_metrics=val_metrics, val_metrics_at_threshold=val_tuned,
            selected_epoch=result["best"]["epoch"], select_metric=sc.select_metric,
            config_hash=chash, train_examples=len(train.texts), loss=sc.loss,
            dtype=_train_dtype(cfg, accelerator),
            max_model_len=model_window(model.config, cfg.evaluate.max_model_len),
            base_model_id=base_id, base_model_revision=base_rev, lora_r=sc.lora_r, lora_alpha=sc.lora_alpha,
            lora_target_modules=sorted(sc.target_modules), lora_modules_to_save=sorted(sc.modules_to_save),
            lineage=_lineage(cfg, stage1_dir, upstream, use_feedback),
        )
        card_file = card.write(tmp)
        _publish(tmp, out)
        if own:  # DVC metric (outside models/stage2: DVC forbids a metrics file inside a directory out)
            Path(cfg.paths.reports).mkdir(parents=True, exist_ok=True)
            (Path(cfg.paths.reports) / "stage2_val_metrics.json").write_text(json.dumps(
                {k: v for k, v in metrics_out.items() if k != "history"}, indent=2))
        mlflow.log_metrics({f"final_val_{k}": v for k, v in val_metrics.items()})
        mlflow.log_metrics({"threshold": threshold, "train_seconds": time.time() - t0})
        mlflow.log_artifacts(str(out / "adapter"), artifact_path="adapter")
        mlflow.log_artifact(str(out / card_file.name))
    return out


# ----------------------------------------------------------------------------- Table 1's other arm
ARM_DIR = "table1_arm"


def run_table1_arm(cfg: Config) -> Path:
    """The `table1_arm` step: the pipeline's own recipe with ``train.stage1.enabled`` flipped, so Table 1
    has both of the study's detectors ("ToxiCN" and "COIG-CQIA & ToxiCN") from one configuration.

    Writes ``<paths.models>/table1_arm/{stage1,stage2}`` (checkpoints under
    ``<paths.checkpoints>/table1_arm.*``); the detector's ``detector.json`` records which arm it is.
    """
    import dataclasses

    flipped = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, stage1=dataclasses.replace(cfg.train.stage1, enabled=not cfg.train.stage1.enabled)))
    root = Path(cfg.paths.models) / ARM_DIR
    log.info("Table 1 arm: stage 1 %s (the pipeline's own detector has it %s)",
             "on" if flipped.train.stage1.enabled else "off", "on" if cfg.train.stage1.enabled else "off")
    s1 = run_stage1(flipped, out=root / "stage1", run_name=f"{ARM_DIR}.stage1")
    return run_stage2(flipped, stage1_dir=s1, out=root / "stage2", run_name=f"{ARM_DIR}.stage2", feedback=False)


__all__ = ["ModelLoadError", "run_stage1", "run_stage2", "run_table1_arm"]
