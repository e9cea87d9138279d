"""Fixtures for the training tests: a synthetic, learnable ToxiCN-like split and a micro tiny base.

Texts are random strings of common characters; a text is toxic exactly when it contains a marker
word, so a model that learns anything learns this. Files are written in the split layout
(``<data.out_dir>/splits/<name>.jsonl``) that ``chintox.splits.load_split`` reads.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

# This machine sets PYTHONDONTWRITEBYTECODE=1, so every process re-compiles transformers from source
# (~30 s of `compile` per process: the "slow tiny tokenizer" was this). Cache bytecode outside the
# venv for this process and the training subprocesses the resume tests start.
PYCACHE = Path(tempfile.gettempdir()) / "chintox-pycache"
sys.pycache_prefix = str(PYCACHE)
sys.dont_write_bytecode = False

REPO = Path(__file__).resolve().parents[3]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from testutil import micro_config

POOL = list("今天我们你他她这那天气很好吃饭学习工作朋友城市生活电影音乐喜欢觉得时间地方问题看说想知道")
MARKER = "垃圾"


def synth_records(n: int, seed: int, prefix: str) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        chars = [rng.choice(POOL) for _ in range(rng.randint(6, 12))]
        if label:
            pos = rng.randint(0, len(chars))
            chars[pos:pos] = list(MARKER)
        out.append({"id": f"{prefix}-{i}", "text": "".join(chars), "label": label})
    rng.shuffle(out)
    return out


def stage1_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        q = "".join(rng.choice(POOL) for _ in range(rng.randint(5, 15)))
        a = "".join(rng.choice(POOL) for _ in range(rng.randint(5, 25)))
        recs.append({"id": f"s1-{i}", "messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]})
    return recs


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def make_workspace(root: Path, n_train: int = 192, n_val: int = 64, **overrides):
    """Write splits and build the micro base under ``root``; returns the micro config."""
    from tasks.base_model import build_tiny_base

    cfg = micro_config(root, **overrides)
    splits = Path(cfg.data.out_dir) / "splits"
    train = synth_records(n_train, 1, "tr")
    write_jsonl(splits / "toxicn_train.jsonl", train)
    write_jsonl(splits / "toxicn_val.jsonl", synth_records(n_val, 2, "va"))
    s1 = stage1_records(48, 3)
    write_jsonl(splits / "stage1.jsonl", s1)
    texts = [r["text"] for r in train] + [m["content"] for r in s1 for m in r["messages"]]
    build_tiny_base(cfg, texts, Path(cfg.paths.models) / "base")
    return cfg


OVERRIDES = {"train.stage1.enabled": False}


@functools.cache
def _template() -> Path:
    from tasks.train import run_stage1

    root = Path(tempfile.mkdtemp(prefix="chintox-train-template-"))
    run_stage1(make_workspace(root, **{"train.stage1.enabled": False}))  # stage1/ = pointer to base
    return root


def workspace(root: Path, **overrides):
    """A copy of the (once-built) micro workspace under ``root``; returns its config."""
    tpl = _template()
    for sub in ("data", "models"):
        shutil.copytree(tpl / sub, root / sub, dirs_exist_ok=True)
    return micro_config(root, **overrides)


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cli_args(root: Path, command: str, **overrides) -> list[str]:
    """`python -m chintox.cli <command>` with the same settings as ``micro_config(root, **overrides)``."""
    sets = {
        "data.out_dir": root / "data", "paths.models": root / "models", "paths.reports": root / "reports",
        "paths.checkpoints": root / "checkpoints",
        "mlflow.tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        "mlflow.artifact_root": root / "mlruns" / "artifacts",
        "model.prompt_file": REPO / "prompts" / "toxicity_zh.txt", **overrides,
    }
    args = [sys.executable, "-m", "chintox.cli", command, "--params", str(REPO / "params.yaml"),
            "--profile", "micro"]
    for k, v in sets.items():
        args += ["--set", f"{k}={json.dumps(v) if not isinstance(v, (str, Path)) else v}"]
    return args
