"""CheckpointManager: atomic writes, sha256 verification, fallback on corruption, config guard."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from chintox.training.checkpoint import CheckpointError, CheckpointManager


def _save(mgr: CheckpointManager, step: int) -> None:
    mgr.save(step, {"epoch": 0, "step_in_epoch": step},
             {"trainable": {"w": torch.full((3,), float(step))}, "rng": {"torch": torch.get_rng_state()}})


def test_keeps_last_n_and_loads_newest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2, config_hash="abc")
    for step in (4, 8, 12):
        _save(mgr, step)
    assert [p.name for p in mgr.list()] == ["ckpt-000000012", "ckpt-000000008"]
    path, state, tensors = mgr.latest()
    assert path.name == "ckpt-000000012" and state["step_in_epoch"] == 12
    assert torch.equal(tensors["trainable"]["w"], torch.full((3,), 12.0))
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["flip_byte", "drop_manifest", "truncate"])
def test_corrupted_latest_warns_and_uses_previous(tmp_path, caplog, damage):
    mgr = CheckpointManager(tmp_path, keep=3, config_hash="abc")
    _save(mgr, 4)
    _save(mgr, 8)
    newest = mgr.list()[0]
    target = newest / "trainable.pt"
    if damage == "flip_byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "drop_manifest":
        (newest / "manifest.json").unlink()
    else:
        target.write_bytes(target.read_bytes()[:10])
    with caplog.at_level(logging.WARNING, logger="chintox.checkpoint"):
        path, state, _ = mgr.latest()
    assert path.name == "ckpt-000000004" and state["step_in_epoch"] == 4
    assert any(newest.name in r.getMessage() and "corrupted" in r.getMessage() for r in caplog.records)


def test_all_corrupted_is_an_error_not_a_silent_restart(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2, config_hash="abc")
    _save(mgr, 4)
    (mgr.list()[0] / "state.json").write_text("{}")
    with pytest.raises(CheckpointError, match="refusing to restart silently"):
        mgr.latest()


def test_checkpoints_of_another_config_are_cleared_with_a_warning(tmp_path, caplog):
    _save(CheckpointManager(tmp_path, keep=2, config_hash="old"), 4)
    mgr = CheckpointManager(tmp_path, keep=2, config_hash="new")
    with caplog.at_level(logging.WARNING, logger="chintox.checkpoint"):
        mgr.check_config()
    assert mgr.latest() is None
    assert any("old" in r.getMessage() and "new" in r.getMessage() for r in caplog.records)


def test_manifest_lists_sha256_of_every_file(tmp_path):
    mgr = CheckpointManager(tmp_path, keep=2, config_hash="abc")
    _save(mgr, 4)
    ck = mgr.list()[0]
    manifest = json.loads((ck / "manifest.json").read_text())
    assert set(manifest["files"]) == {p.name for p in ck.iterdir()} - {"manifest.json"}
    assert all(len(h) == 64 for h in manifest["files"].values())
