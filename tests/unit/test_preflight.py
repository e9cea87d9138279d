"""The start-up check: a configuration this machine cannot run fails at once, naming every missing
thing; one it can run passes, and a dtype the CPU cannot honour is said, not hidden."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from chintox import modeling, preflight
from chintox.config import load_config
from chintox.preflight import PreflightError, check_pipeline

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_paper_profile_names_cuda_and_the_offline_hub(no_gpu, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(preflight, "_cached_on_hub", lambda model_id, revision: False)
    with pytest.raises(PreflightError) as e:
        check_pipeline(load_config(PARAMS, profile="paper"))
    msg = str(e.value)
    assert "train.device is 'cuda'" in msg
    assert "'Qwen/Qwen1.5-1.8B-Chat'" in msg and "offline" in msg
    assert "--profile rehearsal" in msg


def test_a_cached_hub_model_is_not_a_problem(no_gpu, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(preflight, "_cached_on_hub", lambda model_id, revision: True)
    cfg = load_config(PARAMS, profile="paper", overrides={"train.device": "auto"})
    check_pipeline(cfg)  # no CUDA asked for, the model is in the cache: runs (in float32 or bf16)


def test_several_processes_without_gpus_fail(no_gpu, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PreflightError, match="2 processes"):
        check_pipeline(load_config(PARAMS, profile="rehearsal"))


@pytest.mark.parametrize("profile", ["tiny", "micro", "rehearsal"])
def test_cpu_profiles_pass(no_gpu, profile):
    check_pipeline(load_config(PARAMS, profile=profile))


def test_bf16_falls_back_to_float32_and_says_so(no_gpu, monkeypatch, caplog):
    monkeypatch.setattr(modeling, "cpu_supports_bf16", lambda: False)
    assert modeling.resolve_dtype("bfloat16", "cpu")[0] == "float32"
    assert modeling.resolve_dtype("bfloat16", "cuda") == ("bfloat16", None)
    with caplog.at_level(logging.WARNING, logger="chintox.preflight"):
        check_pipeline(load_config(PARAMS, profile="rehearsal"))
    assert any("bfloat16 -> float32" in r.getMessage() for r in caplog.records)


def test_a_missing_local_base_is_named(no_gpu, tmp_path):
    cfg = load_config(PARAMS, profile="tiny", overrides={"model.base": str(tmp_path / "nowhere")})
    with pytest.raises(PreflightError, match="no such folder"):
        check_pipeline(cfg)
