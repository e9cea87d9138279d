"""The vendored study prompt is the study's text, byte for byte, plus our join (CI has ../shared/study)."""

from __future__ import annotations

from pathlib import Path

import pytest
from testutil import REPO

from chintox.config import load_config
from chintox.prompting import load_prompt

pytestmark = pytest.mark.integration

JOIN = "文本：\n".encode()  # ours: the paper does not say how the text is joined (prompts/README.md)


@pytest.fixture(scope="module")
def study_dir() -> Path:
    d = (REPO / load_config(REPO / "params.yaml").data.study_dir).resolve()
    if not d.is_dir():
        pytest.fail(f"the study material is expected at {d} (data.study_dir; CI has it)")
    return d


def test_vendored_prompt_is_the_study_text_plus_the_join(study_dir):
    printed = (study_dir / "gao_prompt_zh.txt").read_bytes()
    vendored = (REPO / "prompts" / "gao_study_zh.txt").read_bytes()
    assert printed and not printed.endswith(JOIN)  # the join is ours, not the paper's
    assert vendored == printed + JOIN


def test_the_study_prompt_is_what_the_paper_profiles_train_with():
    for profile in ("paper", "rehearsal"):
        cfg = load_config(REPO / "params.yaml", profile=profile)
        assert cfg.model.prompt_file == "prompts/gao_study_zh.txt", profile
    prompt = load_prompt(REPO / "prompts" / "gao_study_zh.txt")
    # the instruction the detector sees (and hashes into its card) is the file, unchanged
    assert prompt.instruction.encode() == (REPO / "prompts" / "gao_study_zh.txt").read_bytes()
    assert prompt.user_content("你好").endswith("文本：\n你好")
