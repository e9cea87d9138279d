"""Table 1's other two tables: the study's published rows and the prompt comparison (no model run)."""

from __future__ import annotations

import json

import pytest
from _eval_fixtures import STUDY_HEADER, STUDY_ROWS, fake_metrics, micro_cfg_at, write_study_table

from tasks.prompt_comparison import NOT_RUN, arm_record, build_comparison, load_comparison
from tasks.table1 import StudyTableError, comparison_section, load_study_table, render_table1

OURS_SHA, THEIRS_SHA = "a" * 64, "b" * 64


def test_every_published_row_is_read_as_printed(tmp_path):
    write_study_table(tmp_path)
    rows = load_study_table(tmp_path)
    assert len(rows) == len(STUDY_ROWS)
    qwen = rows[1]
    assert qwen["model"] == "Qwen1.5-1.8B-Chat" and qwen["test_dataset"] == "ToxiCN" and qwen["vllm"] is False
    assert qwen["set"] == "toxicn_test" and rows[2]["set"] == "cold_test"
    assert qwen["accuracy"] == 81.46 and qwen["samples_per_s"] == 33.235
    assert rows[3]["vllm"] is True and rows[3]["train_dataset"] == "COIG-CQIA & ToxiCN"
    assert rows[0]["printed"]["samples_per_s"] == "0.7216"  # the cell's text, for printing as printed


@pytest.mark.parametrize(("rows", "header", "expect"), [
    (STUDY_ROWS[:1] + ["Qwen,ToxiCN,no,ToxiCN,81.46,81.32,84.38,abc,81.33,33.2"], STUDY_HEADER,
     "row 3: column 'f1' is 'abc'"),
    (["Qwen,ToxiCN,maybe,ToxiCN,81.46,81.32,84.38,82.82,81.33,33.2"], STUDY_HEADER, "row 2: column 'vllm'"),
    (["Qwen,ToxiCN,no,Weibo,81.46,81.32,84.38,82.82,81.33,33.2"], STUDY_HEADER, "row 2: column 'test_dataset'"),
    (["Qwen,ToxiCN,no,ToxiCN,181.46,81.32,84.38,82.82,81.33,33.2"], STUDY_HEADER,
     "row 2: column 'accuracy' is '181.46', expected a percentage"),
    (["Qwen,ToxiCN,no,ToxiCN,81.46,81.32,84.38,82.82,81.33,0"], STUDY_HEADER,
     "row 2: column 'samples_per_s' is '0', expected a positive number"),
    (["Qwen,ToxiCN,no,ToxiCN,81.46"], STUDY_HEADER, "row 2: 5 cells, expected 10"),
    (STUDY_ROWS, "model,accuracy", "row 1 (header)"),
    ([], STUDY_HEADER, "a header and no rows"),
])
def test_a_malformed_study_table_names_the_file_and_row(tmp_path, rows, header, expect):
    path = write_study_table(tmp_path, rows, header)
    with pytest.raises(StudyTableError) as e:
        load_study_table(tmp_path)
    assert str(path) in str(e.value) and expect in str(e.value), str(e.value)


def test_a_missing_study_table_names_the_file_and_the_parameter(tmp_path):
    with pytest.raises(StudyTableError, match=r"gao_table1\.csv: not found \(data\.study_dir"):
        load_study_table(tmp_path / "nowhere")


def _comparison(ours_acc=0.70, study_acc=0.66):
    card = {"prompt_sha256": "1" * 64}
    ours = arm_record("ours", "prompts/toxicity_zh.txt", "1" * 64, fake_metrics(ours_acc, OURS_SHA), "ws", card)
    study = arm_record("study", "prompts/gao_study_zh.txt", "2" * 64, fake_metrics(study_acc, THEIRS_SHA), "exp",
                       {"prompt_sha256": "2" * 64})
    return build_comparison(ours, study, profile="micro", experiment={
        "name": "prompt-study", "rev": "c" * 40, "baseline_commit": "d" * 40,
        "params_changed": {"model.prompt_file": ["prompts/toxicity_zh.txt", "prompts/gao_study_zh.txt"]},
        "uncommitted_changes_included": []})


def _render(tmp_path, comparison):
    cfg = micro_cfg_at(tmp_path)
    write_study_table(tmp_path / "study")
    return render_table1([], cfg, load_study_table(tmp_path / "study"), comparison)


def test_published_rows_are_a_separate_table_marked_not_measured_here(tmp_path):
    text = _render(tmp_path, None)
    head, published = text.split("## Published (Gao, one A800 GPU / GPT-4 API): not measured here")
    assert "81.46" not in head  # no published figure among ours
    assert "| Qwen1.5-1.8B-Chat | ToxiCN | no | ToxiCN | 81.46 | 81.32 | 84.38 | 82.82 | 81.33 | 33.235 |" in published
    assert "| GPT4-Turbo-preview | - | no | ToxiCN | 75.07 | 84.92 | 64.52 | 73.33 | 75.89 | 0.7216 |" in published
    assert "| Qwen1.5-1.8B-Chat | COIG-CQIA & ToxiCN | yes | ToxiCN |" in published
    assert "Prompt:" not in text  # no comparison section when none is given


def test_the_prompt_rows_carry_both_arms_their_commit_and_detector(tmp_path):
    comp = comparison_section(_comparison(), OURS_SHA, "micro")
    assert comp["stale"] is False and comp["file"] == "prompt_comparison.json"
    text = _render(tmp_path, comp).split("## Prompt: the study's against ours, same recipe")[1]
    assert "DVC experiment `prompt-study` (commit cccccccccccc, based on commit dddddddddddd)" in text
    ours = next(x for x in text.splitlines() if x.startswith("| ours: `prompts/toxicity_zh.txt`"))
    study = next(x for x in text.splitlines() if x.startswith("| the study's: `prompts/gao_study_zh.txt`"))
    # prompt sha, detector sha, tuned threshold, then ToxiCN Acc F1 AUC Acc(tuned) F1(tuned), COLD the same
    assert ours.split(" | ")[1:9] == ["111111111111", "aaaaaaaaaaaa", "0.45", "70.00", "71.00", "75.00", "72.00",
                                      "71.00"]
    assert study.split(" | ")[4:6] == ["66.00", "67.00"]
    assert "Stale" not in text


def test_a_comparison_of_another_detector_or_profile_is_marked_stale(tmp_path):
    comp = comparison_section(_comparison(), "f" * 64, "tiny")
    assert comp["stale"] is True and len(comp["stale_reasons"]) == 2
    text = _render(tmp_path, comp)
    assert "**Stale**: measured with detector aaaaaaaaaaaa, but the current stage2 detector is ffffffffffff" in text
    assert "measured on profile 'micro', this table is profile 'tiny'" in text
    unknown = comparison_section(_comparison(), None, "micro")
    assert unknown["stale"] is None and "Not checked against this table's detector" in _render(tmp_path, unknown)


def test_placeholder_and_missing_file_render_as_not_run(tmp_path):
    (tmp_path / "prompt_comparison.json").write_text(json.dumps(NOT_RUN))
    for comp in (load_comparison(tmp_path / "prompt_comparison.json"), load_comparison(tmp_path / "none.json")):
        section = comparison_section(comp, OURS_SHA, "micro")
        assert "stale" not in section
        assert "Not run yet: " in _render(tmp_path, section) and "make prompt-comparison" in _render(tmp_path, section)


def test_the_committed_placeholder_is_readable(repo_root):
    comp = load_comparison(repo_root / "reports" / "prompt_comparison.json")
    assert comp["status"] in ("not run", "measured")


def test_the_base_paragraph_says_what_the_tiny_base_read(tmp_path):
    import json

    from tasks.table1 import base_summary

    base = tmp_path / "base"
    base.mkdir()
    assert base_summary(base) is None  # no build_info: a hub model, nothing to say
    info = {"kind": "tiny", "parameters": 5_198_080, "vocab_size": 8000, "pretrain_steps": 0}
    (base / "build_info.json").write_text(json.dumps(info))
    assert base_summary(base).endswith("not pre-trained (random weights).")
    corpus = {"sha256": "ab" * 32, "chars": 11_120_842, "sources": {
        "coig_cqia": {"texts": 35828, "left_out_held_out_text": 0}, "toxicn_train": {"texts": 8634,
        "left_out_held_out_text": 1}, "cold_train": {"texts": 25572, "left_out_held_out_text": 2}}}
    info |= {"pretrain_steps": 800, "pretrain_tokens": 3_276_800, "pretrain_passes": 0.4, "pretrain_corpus": corpus,
             "heldout_texts": 959, "heldout_perplexity_before": 8361.8, "heldout_perplexity_after": 795.3}
    (base / "build_info.json").write_text(json.dumps(info))
    text = base_summary(base)
    for part in ("800 steps (3.3M tokens, 0.40 passes", "11.1M characters", "COLD train (texts only) 25,572 texts",
                 "COLD train's texts in;", "3 texts left out", "`abababababab`", "8362 before pre-training, 795.3 after"):
        assert part in text, part
    assert "times (`model.tiny.pretrain_domain_repeat`)" not in text
    (base / "build_info.json").write_text(json.dumps(info | {"pretrain_domain_repeat": 4}))
    assert "0.40 passes over the corpus, in which each ToxiCN train and COLD train text is 4 times " \
           "(`model.tiny.pretrain_domain_repeat`))" in base_summary(base)
    del corpus["sources"]["cold_train"]
    (base / "build_info.json").write_text(json.dumps(info))
    assert "COLD train's texts out (`model.tiny.pretrain_cold_train: false`)" in base_summary(base)
