"""chintox.prefix: shared-prefix KV reuse must give the logits of the plain full-sequence forward."""

from __future__ import annotations

import copy

import pytest
import torch
from _train_fixtures import make_workspace

from chintox.modeling import load_model, load_tokenizer
from chintox.prefix import answer_logits, build_prefix_cache, encode_prompt_parts, encode_texts
from chintox.prompting import prompt_from_config, render_chat

TEXTS = ["今天天气很好", "你这个垃圾，滚出去！", " 前导空格的文本", "\n以换行开头", "ok 123 混合 text",
         "很长的文本" * 30]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = make_workspace(tmp_path_factory.mktemp("prefix"))
    base = f"{cfg.paths.models}/base"
    tok, model = load_tokenizer(base), load_model(base)
    model.eval()
    return cfg, tok, model


def _plain_logits(model, tok, prompt, texts):
    rows = []
    for t in texts:
        ids = tok.encode(render_chat(tok, prompt, t.lstrip("\n")), add_special_tokens=False)
        with torch.no_grad():
            rows.append(model(input_ids=torch.tensor([ids])).logits[0, -1])
    return torch.stack(rows)


def test_split_tokenisation_equals_whole(setup):
    cfg, tok, _ = setup
    prompt = prompt_from_config(cfg)
    prefix_ids, suffix = encode_prompt_parts(tok, prompt)
    ids, lengths = encode_texts(tok, TEXTS, suffix)
    for i, t in enumerate(TEXTS):
        whole = tok.encode(render_chat(tok, prompt, t.lstrip("\n")), add_special_tokens=False)
        assert prefix_ids + ids[i, : lengths[i]].tolist() == whole, t


def test_answer_logits_match_plain_forward_and_cache_is_not_mutated(setup):
    cfg, tok, model = setup
    prompt = prompt_from_config(cfg)
    prefix_ids, suffix = encode_prompt_parts(tok, prompt)
    ids, lengths = encode_texts(tok, TEXTS, suffix)
    assert lengths.min() < ids.shape[1]  # really padded
    ref = _plain_logits(model, tok, prompt, TEXTS)
    with torch.no_grad():
        got = answer_logits(model, torch.tensor(prefix_ids), ids, lengths)
        cache = build_prefix_cache(model, prefix_ids)
        before = [k.clone() for k, _ in cache.kv]
        got_c1 = answer_logits(model, prefix_ids, ids, lengths, prefix_cache=cache)
        got_c2 = answer_logits(model, prefix_ids, ids[:2], lengths[:2], prefix_cache=cache)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_c1, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_c2, ref[:2], atol=1e-4, rtol=1e-4)
    assert all(k.shape == b.shape and torch.equal(k, b) for (k, _), b in zip(cache.kv, before))
    # the answer logits really depend on the text (not a constant)
    assert (got[0] - got[1]).abs().max() > 1e-3


def test_gradients_flow_through_shared_prefix(setup):
    """With gradients, the shared-prefix path gives the same loss and gradients as the full one."""
    cfg, tok, model = setup
    prompt = prompt_from_config(cfg)
    prefix_ids, suffix = encode_prompt_parts(tok, prompt)
    ids, lengths = encode_texts(tok, TEXTS[:4], suffix)
    target = torch.tensor([1, 2, 3, 4])
    grads = []
    for shared in (True, False):
        m = copy.deepcopy(model).train()
        if shared:
            logits = answer_logits(m, prefix_ids, ids, lengths)
        else:
            full = [torch.tensor(prefix_ids + ids[i, : lengths[i]].tolist()) for i in range(4)]
            logits = torch.stack([m(input_ids=f[None]).logits[0, -1] for f in full])
        torch.nn.functional.cross_entropy(logits, target).backward()
        grads.append(m.model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-3)
