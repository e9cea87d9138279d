"""int8 dynamic quantisation of the hf scorer's model (chintox.serving.quantize) on a random micro Qwen2."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from chintox.serving.quantize import QUANTIZATIONS, quantize_model, quantize_scorer, quantized_linear_count

LAYERS = 2


@pytest.fixture(scope="module")
def micro_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg).eval()  # initializer_range 0.02: last-position logits up to ~1


def _logits(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).logits[:, -1].float()


def test_modes():
    assert QUANTIZATIONS == ("none", "int8")


def test_int8_quantises_decoder_linears_and_stays_close(micro_model):
    q = quantize_model(micro_model, "int8")
    # q, k, v, o, gate, up, down per layer; the LM head and the embedding stay float32
    assert quantized_linear_count(q) == 7 * LAYERS
    assert type(q.lm_head) is nn.Linear and q.lm_head.weight.dtype == torch.float32
    assert q.model.layers[0].mlp.down_proj.weight().dtype == torch.qint8
    # the input model is left as it was
    assert quantized_linear_count(micro_model) == 0
    assert type(micro_model.model.layers[0].self_attn.q_proj) is nn.Linear

    ids = torch.randint(0, 300, (4, 24), generator=torch.Generator().manual_seed(1))
    ref, got = _logits(micro_model, ids), _logits(q, ids)
    rel = (got - ref).abs().max() / ref.abs().max()
    assert rel < 0.05, f"int8 logits differ from float32 by {rel:.3f} of their range"
    # the vocabulary's ranking is kept: same top token on every row, near-perfect correlation
    corr = torch.corrcoef(torch.stack([ref.flatten(), got.flatten()]))[0, 1]
    assert corr > 0.999
    assert torch.equal(ref.argmax(-1), got.argmax(-1))
    assert not torch.equal(ref, got)  # it really computes in int8


def test_none_is_identity(micro_model):
    assert quantize_model(micro_model, "none") is micro_model


def test_unknown_mode_and_wrong_dtype_raise(micro_model):
    with pytest.raises(ValueError, match="unknown quantization"):
        quantize_model(micro_model, "int4")
    with pytest.raises(ValueError, match="unknown quantization"):
        quantize_model(micro_model, "bf16")
    import copy

    bf16 = copy.deepcopy(micro_model).to(torch.bfloat16)
    with pytest.raises(ValueError, match="float32 model on the CPU"):
        quantize_model(bf16, "int8")


def test_quantize_scorer_rebuilds_prefix_cache(micro_model):
    from chintox.prefix import build_prefix_cache

    prefix = [5, 6, 7, 8, 9, 10]
    scorer = SimpleNamespace(model=micro_model, encoder=SimpleNamespace(prefix_ids=prefix),
                             prefix_cache=build_prefix_cache(micro_model, prefix))
    old_k = scorer.prefix_cache.kv[0][0]
    quantize_scorer(scorer, "int8")
    assert quantized_linear_count(scorer.model) == 7 * LAYERS
    new_k = scorer.prefix_cache.kv[0][0]
    expected = build_prefix_cache(scorer.model, prefix).kv[0][0]
    assert torch.equal(new_k, expected) and not torch.equal(new_k, old_k)
    with pytest.raises(ValueError, match="no in-process model"):
        quantize_scorer(SimpleNamespace(llm=None), "int8")
