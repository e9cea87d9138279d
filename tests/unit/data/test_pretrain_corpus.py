"""The tiny base's pre-training corpus holds no validation or evaluation text (normalised match).

Two checks: planted leaks (a held-out text with changed spacing, punctuation and width in each
training-side source) are left out and counted, the counts adding up; and the corpus built from the
real data sets, every source at full size, shares no normalised text with ToxiCN val/test or COLD test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testutil import micro_config

from chintox.splits import HELD_OUT_SPLITS, load_split, write_split
from chintox.textnorm import normalise, normalise_many
from tasks.base_model import pretraining_corpus, pretraining_stream


def _labelled(prefix: str, texts: list[str], split: str) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "text": t, "label": i % 2, "source": prefix.split("_")[0], "split": split}
            for i, t in enumerate(texts)]


def test_planted_leaks_are_left_out_and_counted(tmp_path: Path) -> None:
    cfg = micro_config(tmp_path)
    out = cfg.data.out_dir
    val, test, cold_test = "这个评论区真的太离谱了", "他们根本不懂什么叫尊重", "今天天气不错，适合出去走走"
    write_split(out, "toxicn_val", _labelled("toxicn_val", [val, "验证集的另一条"], "val"))
    write_split(out, "toxicn_test", _labelled("toxicn_test", [test], "test"))
    write_split(out, "cold_test", _labelled("cold_test", [cold_test], "test"))
    # each source carries one held-out text in another spelling (spaces, full-width / ASCII punctuation)
    write_split(out, "stage1", [
        {"id": "s1-0", "messages": [{"role": "user", "content": "请解释一下光合作用"},
                                    {"role": "assistant", "content": "光合作用是植物利用光能的过程"}],
         "subset": "x", "task_type": None, "domain": None},
        {"id": "s1-1", "messages": [{"role": "user", "content": " 他们 根本不懂什么叫尊重！"},
                                    {"role": "assistant", "content": "好的"}],
         "subset": "x", "task_type": None, "domain": None},
    ])
    write_split(out, "toxicn_train", _labelled("toxicn_train", ["训练集的一条", "今天天气不错,适合出去走走"], "train"))
    write_split(out, "cold_train", [{"id": "c-0", "text": "这个评论区 真的太离谱了。", "source": "cold", "split": "train"},
                                    {"id": "c-1", "text": "冷数据集里的普通一句", "source": "cold", "split": "train"}])

    texts, record = pretraining_corpus(cfg)
    held = {normalise(t) for t in (val, test, cold_test)}
    assert not held & set(normalise_many(texts))
    assert sorted(texts) == sorted(["请解释一下光合作用", "光合作用是植物利用光能的过程", "好的", "训练集的一条",
                                    "冷数据集里的普通一句"])
    src = record["sources"]
    assert {k: v["left_out_held_out_text"] for k, v in src.items()} == {
        "coig_cqia": 1, "toxicn_train": 1, "cold_train": 1}
    assert sum(v["texts"] + v["left_out_held_out_text"] + v["left_out_empty"] for v in src.values()) == 4 + 2 + 2
    assert record["texts"] == len(texts) and record["chars"] == sum(len(t) for t in texts)

    # the switch: without COLD train's texts the corpus (and so its hash) differs
    texts2, record2 = pretraining_corpus(micro_config(tmp_path, **{"model.tiny.pretrain_cold_train": False}))
    assert "cold_train" not in record2["sources"] and "冷数据集里的普通一句" not in texts2
    assert record2["sha256"] != record["sha256"]


def test_the_stream_repeats_the_domain_texts_and_adds_nothing(tmp_path: Path) -> None:
    cfg = micro_config(tmp_path)
    out = cfg.data.out_dir
    for name in HELD_OUT_SPLITS:
        write_split(out, name, _labelled(name, [f"{name} 的一条"], "test"))
    write_split(out, "stage1", [{"id": "s1-0", "messages": [{"role": "user", "content": "问"},
                                                            {"role": "assistant", "content": "答"}],
                                 "subset": "x", "task_type": None, "domain": None}])
    write_split(out, "toxicn_train", _labelled("toxicn_train", ["训练一", "训练二"], "train"))
    write_split(out, "cold_train", [{"id": "c-0", "text": "冷一", "source": "cold", "split": "train"}])
    texts, record = pretraining_corpus(cfg)
    assert pretraining_stream(texts, record, 1) == texts
    stream = pretraining_stream(texts, record, 3)
    assert sorted(stream) == sorted(["问", "答"] + ["训练一", "训练二", "冷一"] * 3)
    assert stream[: len(texts)] == texts  # the corpus once, in its order, then the repeats
    with pytest.raises(ValueError, match="needs the corpus record of pretraining_corpus"):
        pretraining_stream(texts, {"sha256": record["sha256"]}, 3)  # no per-source counts: no guessing


def test_real_corpus_holds_no_held_out_text(tmp_path: Path, shared_datasets: Path) -> None:
    from tasks.split import run_split
    from tasks.validate import run_validate

    cfg = micro_config(tmp_path, **{"data.raw_dir": str(shared_datasets), "data.cqia_max_records": None,
                                    "model.tiny.pretrain_cold_train": True})
    run_validate(cfg, great_expectations=False)
    run_split(cfg)
    texts, record = pretraining_corpus(cfg)
    out = cfg.data.out_dir
    held = {k for name in HELD_OUT_SPLITS for k in normalise_many(r["text"] for r in load_split(out, name)) if k}
    assert len(held) > 8_000  # ToxiCN val + test and COLD test (8,693 texts, a few repeated)
    keys = set(normalise_many(texts))
    assert not keys & held
    # every training-side text is in the corpus or counted as left out: nothing silently dropped
    n_in = {"coig_cqia": 2 * len(load_split(out, "stage1")), "toxicn_train": len(load_split(out, "toxicn_train")),
            "cold_train": len(load_split(out, "cold_train"))}
    for name, v in record["sources"].items():
        assert v["texts"] + v["left_out_held_out_text"] + v["left_out_empty"] == n_in[name], name
    assert record["sources"]["cold_train"]["texts"] > 20_000 and record["chars"] > 10_000_000
    print(json.dumps(record, indent=1))
