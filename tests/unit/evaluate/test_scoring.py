"""The hf backend, the shared encoding (truncation, empty text), start-up errors, the parse rule."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
from _eval_fixtures import REPO, make_texts, micro_cfg_at
from testutil import detector_card

from chintox.modeling import ModelLoadError
from chintox.prompting import Prompt, PromptError, load_prompt
from chintox.scoring import make_scorer, parse_answer


@pytest.fixture(scope="module")
def hf(micro_model_dir, tmp_path_factory):
    cfg = micro_cfg_at(tmp_path_factory.mktemp("hfcfg"))
    scorer = make_scorer(micro_model_dir, cfg, "hf", progress=False, batch_size=7)
    yield scorer
    scorer.close()


def test_scores_are_probabilities_and_batching_does_not_change_them(hf, micro_model_dir):
    texts = [t for t, _ in make_texts(30, seed=11)]
    s7 = hf.score(texts)
    assert s7.shape == (30,) and np.all((s7 > 0) & (s7 < 1))
    assert np.std(s7) > 0  # the texts matter
    hf.batch_size = 1
    try:
        s1 = hf.score(texts)
    finally:
        hf.batch_size = 7
    np.testing.assert_allclose(s1, s7, atol=1e-5)
    assert hf.score([]).shape == (0,)


def test_prefix_cached_scores_equal_the_per_sample_generate_path(hf):
    """The batched prefix-KV path and the study's per-sample `generate` read the same first step."""
    texts = [t for t, _ in make_texts(6, seed=5)]
    fast = hf.score(texts)
    labels, slow = hf.generate_with_scores(texts)
    np.testing.assert_allclose(fast, slow, atol=1e-4)
    assert set(labels.tolist()) <= {-1, 0, 1}
    lab2, n_unparsed = hf.generate_labels(texts[:2])
    assert n_unparsed == int((lab2 < 0).sum())


def test_truncation_keeps_prompt_and_suffix_and_is_counted(hf):
    enc = hf.encoder
    long_text = "你好世界这是一个很长的句子" * 400
    hf.reset_stats()
    rows = enc.encode([long_text, "短文本"], hf.stats)
    assert hf.stats.truncated == 1 and hf.stats.tokens_cut > 0
    full = enc.full_ids(rows)
    assert len(full[0]) == hf.max_len - 1  # fits the window with room for the answer token
    assert full[0][: len(enc.prefix_ids)] == enc.prefix_ids
    assert full[0][-len(enc.suffix_ids):] == enc.suffix_ids
    hf.reset_stats()
    s = hf.score([long_text, "短文本"])
    assert hf.reset_stats().truncated == 1 and np.isfinite(s).all()


def test_empty_text_is_scored_and_counted(hf):
    hf.reset_stats()
    s = hf.score(["", "   ", "正常文本"])
    st = hf.reset_stats()
    assert st.empty == 2 and st.n == 3 and np.isfinite(s).all()


def test_encoding_equals_whole_template_tokenisation(hf):
    from chintox.prompting import render_chat

    tok, prompt = hf.tokenizer, hf.prompt
    for text in ["今天天气很好", "你这个垃圾，滚出去！", "ok 123 混合 text"]:
        whole = tok.encode(render_chat(tok, prompt, text), add_special_tokens=False)
        assert hf.encoder.full_ids(hf.encoder.encode([text]))[0] == whole


def test_multi_token_answer_word_fails_at_startup(micro_model_dir, tmp_path):
    d = tmp_path / "det"
    shutil.copytree(micro_model_dir, d / "merged")
    shutil.copy(REPO / "prompts" / "toxicity_zh.txt", d / "prompt.txt")
    detector_card(answer_positive="有毒内容啊").write(d)
    cfg = micro_cfg_at(tmp_path)
    with pytest.raises(PromptError, match="single token"):
        make_scorer(d, cfg, "hf", progress=False)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    cfg = micro_cfg_at(tmp_path)
    for backend in ("hf", "vllm"):
        with pytest.raises(ModelLoadError, match="not found"):
            make_scorer(tmp_path / "no_such_model", cfg, backend)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        make_scorer(tmp_path / "empty", cfg, "hf")


def test_unknown_backend(micro_model_dir, tmp_path):
    with pytest.raises(ValueError, match="backend"):
        make_scorer(micro_model_dir, micro_cfg_at(tmp_path), "onnx")


def test_prompt_too_long_for_window_is_a_clear_error(micro_model_dir, tmp_path):
    cfg = micro_cfg_at(tmp_path, **{"evaluate.max_model_len": 64})
    with pytest.raises(PromptError, match="no room"):
        make_scorer(micro_model_dir, cfg, "hf", progress=False)


@pytest.mark.parametrize("out,label", [("是", 1), (" 否。", 0), ("这段文本是有毒的", 1), ("不确定", -1),
                                       ("是否", 1), ("", -1), ("否，是", 0)])
def test_parse_answer(out, label):
    assert parse_answer(out, Prompt("x", "是", "否")) == label


def test_detector_predict_uses_folder_threshold(micro_detector_dir, tmp_path):
    """Labels come from the folder's ``threshold``: one is written between this model's scores, so
    that 0.5 (the default) and the fixture's 0.45 would both label some texts differently."""
    from chintox.detector import Detector

    texts = [t for t, _ in make_texts(16, seed=13)]
    det = Detector(micro_detector_dir)  # backend hf by default
    assert det.threshold == 0.45
    scores = np.array([r["score"] for r in det.predict(texts)])
    det.close()
    assert len(np.unique(scores)) == len(texts)
    # the threshold: midway between two neighbouring scores, picked so labels differ from 0.5 and 0.45
    ordered = np.sort(scores)
    t = next(float((a + b) / 2) for a, b in itertools.pairwise(ordered)
             if not np.array_equal(scores >= (a + b) / 2, scores >= 0.5)
             and not np.array_equal(scores >= (a + b) / 2, scores >= 0.45))
    d = tmp_path / "det"
    shutil.copytree(micro_detector_dir, d)
    detector_card(stage1_enabled=True, threshold=t, max_seq_len=256).write(d)

    det = Detector(d)
    assert det.threshold == t
    rows = det.predict(texts)
    assert [set(r) for r in rows] == [{"label", "score"}] * len(texts)
    np.testing.assert_allclose([r["score"] for r in rows], scores, atol=1e-6)
    assert [r["label"] for r in rows] == [int(s >= t) for s in scores]
    assert det.predict([]) == []
    assert load_prompt(d / "prompt.txt").instruction == det.prompt.instruction
    det.close()
