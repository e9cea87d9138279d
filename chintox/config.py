"""Typed configuration: one loader for ``params.yaml``.

``params.yaml`` holds base sections plus ``profiles:``; the selected profile is deep-merged over the
base and the result is converted, strictly, into the frozen dataclasses below. An unknown key, a
missing key or a value of the wrong type is a :class:`ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_PARAMS = Path("params.yaml")
PROFILES = ("micro", "tiny", "paper", "rehearsal")
BUILT_BASES = ("tiny", "rehearsal")  # model.base kinds the base step builds; anything else is a hub id / path


class ConfigError(ValueError):
    """A parameter file that cannot be turned into a valid configuration."""


@dataclass(frozen=True)
class PathsConfig:
    models: str
    reports: str
    checkpoints: str


@dataclass(frozen=True)
class DataConfig:
    raw_dir: str
    study_dir: str
    out_dir: str
    seed: int
    val_fraction: float
    duplicates: Literal["drop", "keep"]
    conflicting_labels: Literal["drop", "keep"]
    drop_train_leakage: bool
    min_text_chars: int
    max_text_chars: int
    cqia_max_records: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.min_text_chars < 0 or self.max_text_chars < self.min_text_chars:
            raise ConfigError("data.min_text_chars must be >= 0 and <= data.max_text_chars")


@dataclass(frozen=True)
class Qwen2Shape:
    """The size of a Qwen2-architecture model the base step builds (``model.tiny``, ``model.rehearsal``)."""
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int

    def __post_init__(self) -> None:
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ConfigError(f"model.*.hidden_size ({self.hidden_size}) must be a multiple of "
                              f"num_heads ({self.num_heads})")
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise ConfigError(f"model.*.num_heads ({self.num_heads}) must be a multiple of "
                              f"num_kv_heads ({self.num_kv_heads})")


@dataclass(frozen=True)
class TinyModelConfig(Qwen2Shape):
    """``model.base: tiny``: a small model and BPE tokenizer built from the training texts."""
    tokenizer_max_chars: int
    tokenizer_prompt_copies: int
    # causal-LM pre-training of the built base on the training-side texts (tasks.base_model)
    pretrain_steps: int
    pretrain_batch_size: int
    pretrain_seq_len: int
    pretrain_lr: float
    pretrain_warmup_ratio: float
    pretrain_precision: Literal["bf16", "float32"]  # bf16: autocast where the device computes it natively
    pretrain_cold_train: bool  # COLD train's texts (no labels) in the pre-training corpus
    pretrain_save_every_steps: int
    # times each ToxiCN train / COLD train text (the detector's domain) is in the pre-training stream;
    # COIG-CQIA's texts are in it once. The tokenizer sees every text once either way.
    pretrain_domain_repeat: int = 1
    # torch.compile of the pre-training step (fixed shapes: one compilation, ~25 s on 2 cores). auto:
    # where inductor can build kernels here (a C++ compiler; Triton on CUDA), else eager with a log line
    pretrain_compile: Literal["auto", "always", "never"] = "never"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pretrain_steps < 0 or self.pretrain_batch_size < 1 or self.pretrain_seq_len < 2:
            raise ConfigError("model.tiny: pretrain_steps must be >= 0, pretrain_batch_size >= 1 and "
                              "pretrain_seq_len >= 2")
        if self.pretrain_seq_len > self.max_position_embeddings:
            raise ConfigError(f"model.tiny.pretrain_seq_len ({self.pretrain_seq_len}) exceeds "
                              f"max_position_embeddings ({self.max_position_embeddings})")
        if self.pretrain_domain_repeat < 1:
            raise ConfigError(f"model.tiny.pretrain_domain_repeat must be >= 1, got {self.pretrain_domain_repeat}")
        if self.pretrain_compile not in ("auto", "always", "never"):
            raise ConfigError(f"model.tiny.pretrain_compile must be auto|always|never, got {self.pretrain_compile!r}")
        if self.pretrain_precision not in ("bf16", "float32"):
            raise ConfigError(f"model.tiny.pretrain_precision must be bf16|float32, got {self.pretrain_precision!r}")


@dataclass(frozen=True)
class RehearsalModelConfig(Qwen2Shape):
    """``model.base: rehearsal``: a randomly initialised Qwen2 model over Qwen's own tokenizer."""
    tiktoken_file: str | None
    imitates: str
    rope_theta: float
    tie_word_embeddings: bool
    seed: int


@dataclass(frozen=True)
class ModelConfig:
    base: str
    revision: str | None
    trust_remote_code: bool
    dtype: Literal["float32", "bfloat16", "float16"]
    answer_positive: str
    answer_negative: str
    prompt_file: str
    tiny: TinyModelConfig
    rehearsal: RehearsalModelConfig

    @property
    def is_tiny(self) -> bool:
        return self.base == "tiny"

    @property
    def is_built(self) -> bool:
        """True when the base step builds the base (``tiny`` or ``rehearsal``) rather than loading one."""
        return self.base in BUILT_BASES


@dataclass(frozen=True)
class StageConfig:
    epochs: int
    max_samples: int | None
    batch_size: int
    grad_accum: int
    lr: float
    max_seq_len: int
    warmup_ratio: float
    weight_decay: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str]
    modules_to_save: list[str]
    gradient_checkpointing: bool
    save_every_steps: int
    keep_checkpoints: int
    enabled: bool = True
    select_metric: str = "f1"
    # stage 2 loss at the answer position: "full" = cross-entropy over the vocabulary (target 是/否),
    # "pair" = 2-way softmax over the two answer tokens only (see chintox.training.stage2.answer_loss)
    loss: Literal["full", "pair"] = "full"

    def __post_init__(self) -> None:
        if self.select_metric not in {"f1", "accuracy", "auc", "precision", "recall", "loss"}:
            raise ConfigError(f"train.*.select_metric must be f1|accuracy|auc|precision|recall|loss, "
                              f"got {self.select_metric!r}")
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1 or self.keep_checkpoints < 1:
            raise ConfigError("train.*: batch_size, grad_accum, epochs and keep_checkpoints must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    device: Literal["auto", "cpu", "cuda"]
    stage1: StageConfig
    stage2: StageConfig
    # the seed of stage 1 and stage 2 (adapter init, data order, dropout, subsampling); None: data.seed.
    # Varied for multi-seed comparisons while the splits and the base stay the same.
    seed: int | None = None
    # `make seeds` (tasks.seeds): Table 1's comparison over these training seeds (not read by any stage)
    compare_seeds: list[int] = field(default_factory=lambda: [42, 1, 2])


@dataclass(frozen=True)
class EvaluateConfig:
    backend: Literal["vllm", "hf"]
    threshold: float
    batch_size: int
    max_model_len: int
    truncation: str
    vllm_block_size: int
    vllm_prefix_caching: bool
    vllm_kvcache_gb: int
    vllm_mode: Literal["merged", "lora"]
    bootstrap_samples: int
    sets: list[str]
    generate_max_new_tokens: int = 4      # generate-and-parse mode: tokens generated per text
    generate_and_parse: bool = False      # also run the study's generate-and-parse mode in evaluate
    val_set: str = "toxicn_val"           # where a threshold is tuned when detector.json has none
    base_dir: str = "base"                # Table 1's zero-shot row, relative to paths.models
    # Table 1's detector rows, relative to paths.models, each placed by its own detector.json
    table1_detectors: list[str] = field(default_factory=lambda: ["stage2", "table1_arm/stage2"])
    table1_backends: list[str] = field(default_factory=lambda: ["vllm", "hf"])
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where the hf backend scores (vLLM: its own platform)


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str
    artifact_root: str
    experiment: str
    registered_model: str


@dataclass(frozen=True)
class PromoteConfig:
    cold_accuracy_tolerance: float
    min_f1_delta: float
    # A challenger trained on moderators' feedback must beat the champion on the feedback holdout by more
    # than this, on this metric (both scored at promotion, by the same scorer, on the same rows).
    feedback_metric: Literal["accuracy", "f1"] = "accuracy"
    feedback_min_gain: float = 0.0


@dataclass(frozen=True)
class FeedbackConfig:
    """Moderators' corrections (``chintox feedback``; see ``tasks/feedback.py``)."""

    store: str = "feedback"                 # the DVC-tracked store (stage feedback_store); not per profile
    train: bool = False                     # stage 2 also trains on the feedback train part
    repeat: int = 4                         # each feedback row is seen this many times per stage-2 epoch
    holdout_share: float = 0.2              # of the corrected texts, never trained on: an evaluation set
    conflicts: Literal["latest", "majority", "drop"] = "latest"  # one text, corrections that disagree
    leakage_sets: list[str] = field(default_factory=lambda: ["toxicn_val", "toxicn_test", "cold_test"])
    review_size: int = 200                  # judgements per review-queue export ...
    review_random_share: float = 0.2        # ... of which this share is a random sample (calibration)
    min_new_corrections: int = 100          # retrain-on-feedback retrains once this many arrived
    great_expectations: bool = True         # the import's GX report (Data Docs in <store>/data_docs)

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout_share < 1.0:
            raise ConfigError(f"feedback.holdout_share must be in (0, 1), got {self.holdout_share}")
        if not 0.0 <= self.review_random_share <= 1.0:
            raise ConfigError("feedback.review_random_share must be in [0, 1]")
        if self.repeat < 1 or self.review_size < 1 or self.min_new_corrections < 1:
            raise ConfigError("feedback.repeat, review_size and min_new_corrections must be >= 1")


@dataclass(frozen=True)
class ServeConfig:
    """``chintox serve``: the moderation API in front of a scoring engine (see :mod:`chintox.serving`)."""

    host: str = "127.0.0.1"                 # the API's address (and the vLLM server's: always loopback)
    port: int = 8090
    backend: Literal["auto", "vllm", "hf"] = "auto"  # auto: vLLM's server when it can run the model, else hf
    dtype: str = "card"                     # card (the detector's own) | float32 | bfloat16
    quantization: Literal["none", "int8"] = "none"   # int8: PyTorch dynamic int8 weights (hf backend)
    batch_max_texts: int = 128              # concurrent requests gathered into one scoring call ...
    batch_wait_ms: float = 5.0              # ... waiting at most this long for company
    max_texts_per_request: int = 64
    max_text_chars: int = 2000              # longer texts are refused (413); within it, the card truncates
    max_body_bytes: int = 262144
    log_url: str = "sqlite:///serving/predictions.db"  # SQLAlchemy URL of the judgement log
    log_texts: bool = False                 # store the text itself (else only its sha256)
    follow: bool = True                     # follow the alias when it moves (promotion, rollback)
    poll_s: float = 5.0
    startup_timeout_s: float = 240.0        # a new version must be ready within this, or it is not taken
    drain_timeout_s: float = 30.0           # in-flight requests of the old version finish within this
    model_cache: str = "serving/models"     # where registered versions are downloaded


@dataclass(frozen=True)
class Config:
    profile: str
    paths: PathsConfig
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    mlflow: MlflowConfig
    promote: PromoteConfig
    serve: ServeConfig = field(default_factory=ServeConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    source: str = field(default="<dict>", compare=False)

    @property
    def train_seed(self) -> int:
        """The seed stage 1 and stage 2 train with: ``train.seed``, or ``data.seed`` when it is null."""
        return self.data.seed if self.train.seed is None else self.train.seed

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``over`` merged in, recursively for nested mappings. An empty mapping
    changes nothing, also over a scalar: params.yaml's profiles say ``key: {}`` for "keep the base
    value", so that every ``profiles.<name>.<key>`` dvc.yaml tracks exists (see params.yaml)."""
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and not value and key in out:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        if not isinstance(cur.get(k), dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
        cur = cur[k]
    if keys[-1] not in cur:
        raise ConfigError(f"override {dotted!r}: unknown key {keys[-1]!r}")
    cur[keys[-1]] = value


def _convert(tp: Any, value: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where} must be a mapping, got {type(value).__name__}")
        return _build(tp, value, where, source)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{source}: {where} has an invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {where} must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {where} must be a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {where} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {where} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {where} must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, raw: dict[str, Any], where: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]!r}; allowed keys here: {sorted(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: missing key {key!r}")
            continue
        kwargs[name] = _convert(hints[name], raw[name], key, source)
    return cls(**kwargs)


def config_from_dict(
    raw: dict[str, Any],
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    source: str = "<dict>",
) -> Config:
    """Build a :class:`Config` from a parsed params mapping, a profile name and dotted overrides."""
    raw = copy.deepcopy(raw)
    profiles = raw.pop("profiles", {}) or {}
    chosen = profile or raw.get("profile") or "tiny"
    if chosen not in profiles:
        raise ConfigError(f"{source}: unknown profile {chosen!r}; defined profiles: {sorted(profiles)}")
    merged = deep_merge(raw, profiles[chosen] or {})
    merged["profile"] = chosen
    for dotted, value in (overrides or {}).items():
        _set_dotted(merged, dotted, value)
    cfg = _build(Config, merged, "", source)
    return dataclasses.replace(cfg, source=source)


def load_config(
    path: str | Path = DEFAULT_PARAMS,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Read ``params.yaml`` (or ``path``) and return the typed configuration of ``profile``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"parameter file not found: {p.resolve()}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return config_from_dict(raw, profile=profile, overrides=overrides, source=str(p))


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key.sub=value`` (value read as YAML) for ``--set`` options."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)
