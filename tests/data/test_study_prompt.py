"""The study material (CI has ../shared/study): the vendored prompt is its text, byte for byte, plus our
join; its Table 1 file reads whole."""

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


def test_the_study_table_loads_whole(study_dir):
    from tasks.table1 import load_study_table

    rows = load_study_table(study_dir)
    assert len(rows) == 16  # the paper's Table 1: 8 model/training/vLLM rows, each on ToxiCN and COLD
    assert {r["test_dataset"] for r in rows} == {"ToxiCN", "COLD"}
    best = next(r for r in rows if r["model"] == "Qwen1.5-1.8B-Chat" and r["train_dataset"] == "ToxiCN"
                and not r["vllm"] and r["test_dataset"] == "ToxiCN")
    assert (best["accuracy"], best["f1"]) == (81.46, 82.82)
