"""Stage 2 on the micro profile: it trains (the val loss falls, the ranking does not collapse),
writes the detector contract, and the merged model scores like base + adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _train_fixtures import workspace

from chintox.modeling import load_model, load_tokenizer
from chintox.prefix import answer_logits, encode_prompt_parts, encode_texts
from chintox.prompting import prompt_from_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from chintox.training.stage2 import Stage2Data, score_texts
    from tasks.train import load_records, run_stage2

    root = tmp_path_factory.mktemp("stage2")
    cfg = workspace(root)
    # untrained reference on val: the loss must fall from here
    tok, model = load_tokenizer(Path(cfg.paths.models) / "stage1"), load_model(Path(cfg.paths.models) / "stage1")
    val = Stage2Data(tok, prompt_from_config(cfg), load_records(cfg, "toxicn_val"), cfg.train.stage2.max_seq_len)
    _, loss0 = score_texts(model, val, 64, loss_kind=cfg.train.stage2.loss)
    out = run_stage2(cfg)
    return cfg, out, loss0, val


def test_stage2_loss_falls_and_ranking_holds(trained):
    """What 24 micro steps reliably do, measured over 31 values of data.seed (LoRA init, sampling,
    batch order) on a shared 2-core CPU; results do not depend on load or on 1-4 torch threads:

    - val loss (full-vocabulary CE at the answer) 6.19 untrained -> 2.32-2.71 after 2 epochs
      (ratio <= 0.44 for every seed): the bar is 0.6;
    - val AUC 0.585-0.991 (median 0.89; this test's seed 42: 0.816). The *untrained* random micro
      model already ranks at 0.79 (the marker shifts its hidden state), so AUC here is no evidence
      of learning the marker, and the old bar (> 0.8, "0.82-0.92") was neither; the bar is a floor
      below every measured run: the ranking has not collapsed or inverted;
    - accuracy at the val-tuned threshold 0.56-0.95 (majority 0.5): the bar is the majority.
    """
    cfg, out, loss0, val = trained
    metrics = json.loads((out / "val_metrics.json").read_text())
    hist = metrics["history"]
    assert len(hist) == cfg.train.stage2.epochs
    assert hist[-1]["loss"] < loss0 * 0.6, (loss0, hist)
    majority = max(sum(val.labels), len(val.labels) - sum(val.labels)) / len(val.labels)
    assert metrics["at_threshold"]["accuracy"] >= majority, metrics
    assert metrics["at_0.5"]["auc"] >= 0.55, metrics


def test_detector_folder_contract(trained):
    cfg, out, _, _ = trained
    det = json.loads((out / "detector.json").read_text())
    for key in ("base_model", "stage1_enabled", "profile", "answer_positive", "answer_negative",
                "prompt_sha256", "threshold", "threshold_default", "max_seq_len", "val_metrics",
                "selected_epoch", "config_hash"):
        assert key in det, key
    prompt = prompt_from_config(cfg)
    assert det["prompt_sha256"] == prompt.sha256 and det["answer_positive"] == "是"
    assert det["stage1_enabled"] is False and det["profile"] == "micro"
    assert 0.0 < det["threshold"] < 1.0 and det["threshold_default"] == 0.5
    assert 1 <= det["selected_epoch"] <= cfg.train.stage2.epochs
    # the card: served dtype and window, and lineage naming the exact bytes trained and validated on
    from chintox.card import DetectorCard
    from chintox.provenance import dir_sha256, file_sha256

    card = DetectorCard.read(out)
    assert card.dtype == "float32" and card.max_model_len == min(cfg.evaluate.max_model_len,
                                                                 cfg.model.tiny.max_position_embeddings)
    splits = Path(cfg.data.out_dir) / "splits"
    assert card.lineage["data.toxicn_train"] == file_sha256(splits / "toxicn_train.jsonl")
    assert card.lineage["data.toxicn_val"] == file_sha256(splits / "toxicn_val.jsonl")
    assert card.lineage["model.stage1"] == dir_sha256(Path(cfg.paths.models) / "stage1")
    assert card.lineage["model.upstream"] == dir_sha256(Path(cfg.paths.models) / "base")  # stage 1 off
    assert (out / "prompt.txt").read_text(encoding="utf-8") == prompt.instruction
    assert (out / "merged" / "model.safetensors").is_file() and (out / "merged" / "tokenizer.json").is_file()
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not list(out.parent.glob(".tmp-*"))


def test_merged_model_equals_base_plus_adapter(trained):
    from peft import PeftModel

    cfg, out, _, _ = trained
    tok = load_tokenizer(out / "merged")
    merged = load_model(out / "merged").eval()
    with_adapter = PeftModel.from_pretrained(load_model(Path(cfg.paths.models) / "stage1"), out / "adapter").eval()
    prefix_ids, suffix = encode_prompt_parts(tok, prompt_from_config(cfg))
    ids, lengths = encode_texts(tok, ["今天天气很好", "你真是垃圾啊", "我们一起学习"], suffix)
    with torch.no_grad():
        a = answer_logits(merged, prefix_ids, ids, lengths)
        b = answer_logits(with_adapter, prefix_ids, ids, lengths)
        plain = load_model(Path(cfg.paths.models) / "stage1").eval()
        c = answer_logits(plain, prefix_ids, ids, lengths)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert (a - c).abs().max() > 1e-2  # the adapter changed something: the comparison is not vacuous
