"""Test helpers: a random-weight micro detector folder and evaluation metrics, written in seconds.

Same layout as the stage-2 step writes: ``<models>/stage2/{merged/, prompt.txt, detector.json}`` and
``<reports>/metrics.json``; plus small evaluation-set files under ``<data>/splits/``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from chintox.config import Config

REPO = Path(__file__).resolve().parents[3]


def _testutil():
    """tests/testutil.py, importable from subprocesses too (they do not run pytest's path set-up)."""
    import sys

    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    import testutil

    return testutil


def micro_config(root: Path, **overrides) -> Config:
    return _testutil().micro_config(root, **overrides)

TEXTS = [
    "你好，今天天气很好。", "这个人真是个傻子，滚出去。", "我们一起去吃饭吧。", "地域黑真恶心，别再说了。",
    "谢谢你的帮助，非常感谢。", "你这种人就不配活着。", "这部电影很好看，推荐大家去看。", "女司机都不会开车。",
]


def default_metrics(f1: float = 0.70, cold_acc: float = 0.65) -> dict[str, Any]:
    """The layout tasks.evaluate writes: ``<set>.default.*`` and ``<set>.tuned.*`` (gated: tuned)."""
    def block(acc: float, f: float) -> dict[str, float]:
        return {"accuracy": acc, "precision": 0.7, "recall": 0.7, "f1": f, "n": 8}

    return {
        "toxicn_test": {"default": block(0.70, f1 - 0.02), "tuned": block(0.71, f1)},
        "cold_test": {"default": block(cold_acc - 0.01, 0.6), "tuned": block(cold_acc, 0.6)},
        "backend": "hf",
        "model": "models/stage2",
        "threshold_default": 0.5,
    }


def build_micro_detector(cfg: Config, cache: Path | None = None) -> Path:
    """Write ``<paths.models>/stage2`` (a random-weight micro Qwen2 detector); returns the folder."""
    out = Path(cfg.paths.models) / "stage2"
    if cache is not None and (cache / "detector.json").is_file():
        shutil.copytree(cache, out, dirs_exist_ok=True)
        return out
    from tasks.base_model import build_tiny_model, train_tokenizer

    prompt = Path(cfg.model.prompt_file).read_text(encoding="utf-8")
    tok = train_tokenizer(TEXTS * 20 + [prompt] * 20, cfg.model.tiny.vocab_size,
                          must_be_single=[cfg.model.answer_positive, cfg.model.answer_negative])
    model = build_tiny_model(cfg.model.tiny, tok)
    (out / "merged").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "merged", safe_serialization=True)
    tok.save_pretrained(out / "merged")
    (out / "prompt.txt").write_text(prompt, encoding="utf-8")
    _testutil().detector_card(profile=cfg.profile, answer_positive=cfg.model.answer_positive,
                              answer_negative=cfg.model.answer_negative,
                              prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest()).write(out)
    if cache is not None:
        shutil.copytree(out, cache, dirs_exist_ok=True)
    return out


def write_metrics(cfg: Config, metrics: dict[str, Any] | None = None) -> Path:
    """metrics.json as run_evaluate writes it for the detector now in ``<models>/stage2``: it names
    the folder's hash and the evaluation files' hashes (the files are written first when missing)."""
    from chintox.provenance import dir_sha256, file_sha256

    splits = Path(cfg.data.out_dir) / "splits"
    if not all((splits / f"{s}.jsonl").is_file() for s in cfg.evaluate.sets):
        write_eval_sets(cfg)
    scored = {"detector_sha256": dir_sha256(Path(cfg.paths.models) / "stage2"),
              "eval_data_sha256": {s: file_sha256(splits / f"{s}.jsonl") for s in cfg.evaluate.sets}}
    p = Path(cfg.paths.reports) / "metrics.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({**(metrics or default_metrics()), **scored}, indent=2), encoding="utf-8")
    return p


def write_eval_sets(cfg: Config, tag: str = "v1") -> None:
    d = Path(cfg.data.out_dir) / "splits"
    d.mkdir(parents=True, exist_ok=True)
    for s in cfg.evaluate.sets:
        (d / f"{s}.jsonl").write_text(
            "\n".join(json.dumps({"text": t, "label": i % 2, "v": tag}, ensure_ascii=False)
                      for i, t in enumerate(TEXTS)) + "\n", encoding="utf-8")


def retrain(cfg: Config, seed_note: str) -> None:
    """Make the detector folder differ (a new 'training' result) without rebuilding the model."""
    from chintox.card import DetectorCard

    d = Path(cfg.paths.models) / "stage2"
    DetectorCard(**{**DetectorCard.read(d).to_dict(), "config_hash": seed_note}).write(d)
