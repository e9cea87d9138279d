"""Stage 1 label masking and pointer mode, and the clear errors a user meets first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _train_fixtures import REPO, workspace
from testutil import detector_card

from chintox.config import ConfigError, load_config
from chintox.modeling import BASE_POINTER, ModelLoadError, load_tokenizer


def test_stage1_labels_only_the_assistant_turn(tmp_path):
    from tasks.train import _stage1_example

    cfg = workspace(tmp_path)
    tok = load_tokenizer(Path(cfg.paths.models) / "base")
    msgs = [{"role": "user", "content": "今天天气怎么样"}, {"role": "assistant", "content": "今天天气很好"}]
    ids, labels = _stage1_example(tok, msgs, 512)
    assert ids == tok.encode(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)
    learned = tok.decode([i for i, y in zip(ids, labels) if y != -100])
    assert learned.startswith("今天天气很好") and "<|im_end|>" in learned and "怎么样" not in learned
    assert labels[: len(labels) - len([y for y in labels if y != -100])] == \
        [-100] * (len(labels) - len([y for y in labels if y != -100]))
    # truncated into the user turn: nothing to learn, the record is dropped
    assert _stage1_example(tok, msgs, 5) is None


def test_stage1_disabled_writes_a_pointer_to_the_base(tmp_path):
    from chintox.modeling import resolve_model_ref
    from tasks.train import run_stage1

    cfg = workspace(tmp_path, **{"train.stage1.enabled": False})
    out = run_stage1(cfg)
    assert json.loads((out / BASE_POINTER).read_text())["model"] == str(Path(cfg.paths.models) / "base")
    assert resolve_model_ref(out) == str(Path(cfg.paths.models) / "base")
    assert not (out / "config.json").exists()


def test_stage1_enabled_trains_and_merges(tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from chintox.modeling import load_model
    from tasks.train import run_stage1

    cfg = workspace(tmp_path, **{"train.stage1.enabled": True, "train.stage1.max_samples": 16})
    out = run_stage1(cfg)
    assert (out / "model.safetensors").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    assert not (out / BASE_POINTER).exists()
    info = json.loads((out / "train_info.json").read_text())
    assert info["examples"] == 16 and len(info["history"]) == 1
    # trains: the saved model is a plain model (same tensors as the base, no LoRA keys) whose weights moved
    base_dir = Path(cfg.paths.models) / "base"
    base, merged = load_file(str(base_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert merged.keys() == base.keys() and not any("lora" in k for k in merged)
    moved = {k for k in merged if not torch.allclose(merged[k], base[k], atol=1e-6, rtol=0)}
    assert moved, "stage 1 left every weight of the base unchanged"
    # merges: the saved weights are the base with the saved adapter merged in
    ref = PeftModel.from_pretrained(load_model(base_dir), out / "adapter").merge_and_unload().state_dict()
    for k, v in merged.items():
        torch.testing.assert_close(v, ref[k], atol=1e-5, rtol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


def test_missing_upstream_model_is_a_clear_error(tmp_path):
    from tasks.train import run_stage2

    cfg = workspace(tmp_path, **{"paths.models": str(tmp_path / "nowhere")})
    with pytest.raises(ModelLoadError, match="model folder not found: .*nowhere/stage1"):
        run_stage2(cfg)


def test_a_missing_folder_under_a_local_folder_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    from chintox.modeling import load_model, load_tokenizer

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for load in (load_tokenizer, load_model):  # owner/name in form, but models/ is a folder here
        with pytest.raises(ModelLoadError, match=f"model folder not found: {tmp_path}/models/stage2$"):
            load("models/stage2")


def test_unknown_params_key_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'lora_rank'"):
        load_config(REPO / "params.yaml", profile="micro", overrides={"train.stage2.lora_rank": 8})
    bad = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    bad.write_text(text.replace("    select_metric: f1", "    select_metrc: f1", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key train.stage2.'select_metrc'"):
        load_config(bad, profile="micro")
    with pytest.raises(ConfigError, match="select_metric"):
        load_config(REPO / "params.yaml", profile="micro", overrides={"train.stage2.select_metric": "acc"})


def test_table1_arm_flips_stage1_and_lands_in_its_row(tmp_path):
    from tasks.table1 import ROW_BASE, ROW_S2, ROW_S12, _default_rows
    from tasks.train import run_table1_arm

    cfg = workspace(tmp_path, **{"train.stage1.enabled": False, "train.stage1.max_samples": 16,
                                 "train.stage2.max_samples": 32, "train.stage2.epochs": 1})
    models = Path(cfg.paths.models)
    out = run_table1_arm(cfg)
    assert out == models / "table1_arm" / "stage2"
    det = json.loads((out / "detector.json").read_text())
    assert det["stage1_enabled"] is True and det["base_model"] == str(models / "table1_arm" / "stage1")
    assert (models / "table1_arm" / "stage1" / "model.safetensors").is_file()
    assert (Path(cfg.paths.checkpoints) / "table1_arm.stage2").is_dir()
    # the pipeline's own outputs are untouched: no models/stage2, no stage-2 DVC metric
    assert not (models / "stage2").exists()
    assert not (Path(cfg.paths.reports) / "stage2_val_metrics.json").exists()

    rows = _default_rows(models, cfg.evaluate)
    assert rows == {ROW_BASE: models / "base", ROW_S2: None, ROW_S12: out}
    (models / "stage2").mkdir()
    detector_card(stage1_enabled=False).write(models / "stage2")
    assert _default_rows(models, cfg.evaluate)[ROW_S2] == models / "stage2"
