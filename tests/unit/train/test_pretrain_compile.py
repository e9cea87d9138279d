"""``model.tiny.pretrain_compile``: how the choice resolves on a machine, and the checks behind it.
(That a compiled pre-training resumes to the same bytes is tests/unit/train/test_pretrain_resume.py.)"""

from __future__ import annotations

import pytest

from chintox.config import ConfigError, load_config
from chintox.modeling import inductor_available
from tasks import base_model


def test_auto_and_never_run_eager_where_inductor_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("chintox.modeling.inductor_available", lambda device: (False, "no C++ compiler"))
    assert base_model._use_compile("auto", "cpu") is False
    assert base_model._use_compile("never", "cpu") is False
    with pytest.raises(RuntimeError, match="pretrain_compile is 'always'.*no C\\+\\+ compiler.*auto or never"):
        base_model._use_compile("always", "cpu")


def test_auto_compiles_where_inductor_can(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("chintox.modeling.inductor_available", lambda device: (True, ""))
    assert base_model._use_compile("auto", "cpu") is True
    assert base_model._use_compile("always", "cpu") is True
    assert base_model._use_compile("never", "cpu") is False


def test_no_cpp_compiler_on_path_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from torch._inductor import config

    # inductor reads $CXX into its default once, at first import (which earlier tests may have done):
    # a fixed default here, so only inductor_available's own reading of $CXX can put my-cxx in the list
    monkeypatch.setattr(config.cpp, "cxx", (None, "inductor-default-cxx"))
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no compiler anywhere
    monkeypatch.setenv("CXX", "my-cxx")
    ok, why = inductor_available("cpu")
    assert not ok
    assert why == "no C++ compiler on PATH (looked for my-cxx, inductor-default-cxx)"


def test_deterministic_flag_is_restored() -> None:
    import torch

    assert not torch.are_deterministic_algorithms_enabled()
    with base_model._deterministic(True, "cpu"):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()


def test_unknown_choice_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="pretrain_compile"):
        load_config(overrides={"model.tiny.pretrain_compile": "yes"})
