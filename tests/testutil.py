"""Helpers shared by the test suites (imported by name: ``from testutil import micro_config``).

They live here, not in ``conftest.py``: several folders have a conftest, and ``from conftest import``
would pick whichever was imported first.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

from chintox.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared" / "datasets").resolve()
DVC_TEMPLATE = re.compile(r"\$\{\s*([\w.]+)\s*\}")  # dvc.yaml's ${a.b}


def lookup(tree: dict, dotted: str):
    """``tree``'s value at the dotted key ``a.b``; KeyError naming the key when it is missing."""
    cur = tree
    for k in dotted.split("."):
        if not isinstance(cur, dict) or k not in cur:
            raise KeyError(dotted)
        cur = cur[k]
    return cur


def resolve_dvc_template(text: str, params: dict) -> str:
    """``${a.b}`` in ``text`` replaced by ``params``' value, as DVC does."""
    return DVC_TEMPLATE.sub(lambda m: str(lookup(params, m.group(1))), text)


def micro_overrides(root: Path) -> dict[str, str]:
    """Dotted overrides that put every output of a run (data, models, reports, checkpoints, the
    MLflow store) under ``root``; also what the Prefect deployment test passes to a flow."""
    return {
        "data.out_dir": str(root / "data"),
        "paths.models": str(root / "models"),
        "paths.reports": str(root / "reports"),
        "paths.checkpoints": str(root / "checkpoints"),
        "mlflow.tracking_uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}",
        "mlflow.artifact_root": str(root / "mlruns" / "artifacts"),
        "model.prompt_file": str(REPO / "prompts" / "toxicity_zh.txt"),
    }


def micro_config(root: Path, **overrides) -> Config:
    """The `micro` profile with every output under ``root``; extra dotted overrides allowed."""
    return load_config(REPO / "params.yaml", profile="micro", overrides={**micro_overrides(root), **overrides})


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that refuses every connection for as long as the block runs: bound by
    this process (so no other process can start listening on it) but never listening."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
    finally:
        s.close()


def detector_card(**overrides):
    """A complete :class:`chintox.card.DetectorCard` for test detector folders; ``overrides`` replace
    fields (``write(folder)`` it next to ``merged/`` and ``prompt.txt``)."""
    import hashlib

    from chintox.card import DetectorCard

    prompt = (REPO / "prompts" / "toxicity_zh.txt").read_text(encoding="utf-8")
    fields = {
        "base_model": "tiny", "base_model_resolved": "tiny", "stage1_enabled": False, "profile": "micro",
        "answer_positive": "是", "answer_negative": "否",
        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(), "threshold": 0.5,
        "threshold_default": 0.5, "max_seq_len": 256, "val_metrics": {"f1": 0.5},
        "val_metrics_at_threshold": {"f1": 0.5}, "selected_epoch": 1, "select_metric": "f1",
        "config_hash": "test", "train_examples": 0, "loss": "full", "dtype": "float32", "max_model_len": 1024,
        "base_model_id": "built:tiny", "base_model_revision": "sha256:test", "lora_r": 16, "lora_alpha": 32,
        "lora_target_modules": ["q_proj", "v_proj"], "lora_modules_to_save": [],
        "lineage": {},
    }
    return DetectorCard(**{**fields, **overrides})
