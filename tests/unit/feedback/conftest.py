"""A tiny feedback project in tmp: a micro config whose store, splits and judgement log live in tmp."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from feedbackfix import EVAL_TEXTS, TRAIN_TEXT
from testutil import micro_config

from chintox.config import Config
from chintox.splits import write_split


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., Config]:
    """A config for the tmp project (the splits written once); extra dotted overrides allowed."""
    out = tmp_path / "data"
    for name, text in EVAL_TEXTS.items():
        write_split(out, name, [{"id": f"{name}-0", "text": text, "label": 1, "source": "toxicn", "split": "test"}])
    write_split(out, "toxicn_train", [{"id": "t-0", "text": TRAIN_TEXT, "label": 0, "source": "toxicn",
                                       "split": "train"}])

    def make(**overrides: Any) -> Config:
        return micro_config(tmp_path, **{"feedback.store": str(tmp_path / "store"),
                                         "serve.log_url": f"sqlite:///{tmp_path / 'log' / 'judgements.db'}",
                                         "feedback.great_expectations": False, **overrides})

    return make


@pytest.fixture
def cfg(make_cfg) -> Config:
    return make_cfg()
