"""Resume of the tiny base's pre-training: a `chintox base` killed with SIGKILL after a mid-run
checkpoint and started again ends with the same base as an uninterrupted run.

Tolerance: exact, as for stage 2 (tests/unit/train/test_resume.py). The pre-training runs through the
same resumable loop: weights, optimizer, scheduler, RNG states and the data order are restored, the
tokenizer and the initial model are rebuilt deterministically, and CPU kernels (bf16 autocast
included) are deterministic at a fixed thread count; so the saved model files are compared byte for byte.
Run eager and compiled (``model.tiny.pretrain_compile``: the tiny profile compiles where it can; every
process compiles afresh, so the resumed run must build the same kernels as the uninterrupted one).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from _train_fixtures import REPO, cli_args, cli_env, stage1_records, synth_records, write_jsonl

STEPS = {"model.tiny.pretrain_steps": 16, "model.tiny.pretrain_save_every_steps": 2}


def _splits(root: Path) -> None:
    d = root / "data" / "splits"
    write_jsonl(d / "toxicn_train.jsonl", synth_records(96, 1, "tr"))
    write_jsonl(d / "toxicn_val.jsonl", synth_records(32, 2, "va"))
    write_jsonl(d / "toxicn_test.jsonl", synth_records(16, 4, "te"))
    write_jsonl(d / "cold_test.jsonl", synth_records(16, 5, "ct"))
    write_jsonl(d / "cold_train.jsonl", [{"id": r["id"], "text": r["text"], "source": "cold", "split": "train"}
                                         for r in synth_records(64, 6, "ctr")])
    write_jsonl(d / "stage1.jsonl", stage1_records(48, 3))


def _start(root: Path, log: Path, steps: dict) -> subprocess.Popen:
    with log.open("w") as fh:  # a file, never an unread pipe (it would block the progress output)
        return subprocess.Popen(cli_args(root, "base", **steps), cwd=REPO, env=cli_env(), text=True,
                                stdout=fh, stderr=subprocess.STDOUT)


def _checkpoint_steps(root: Path) -> list[int]:
    ck = root / "checkpoints" / "pretrain"
    return sorted(int(p.name[5:]) for p in ck.glob("ckpt-*") if (p / "manifest.json").is_file()) \
        if ck.is_dir() else []


@pytest.mark.slow
@pytest.mark.parametrize("compile_mode", ["never", "always"])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path: Path, compile_mode: str) -> None:
    steps = STEPS | {"model.tiny.pretrain_compile": compile_mode}
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for root in (killed, clean):
        _splits(root)

    log1 = tmp_path / "base-kill.log"
    proc = _start(killed, log1, steps)
    t0 = time.time()
    while not (_checkpoint_steps(killed) and _checkpoint_steps(killed)[-1] >= 4):
        if proc.poll() is not None:
            pytest.fail(f"pre-training ended (rc={proc.returncode}) before it could be killed:\n"
                        f"{log1.read_text(errors='replace')[-3000:]}")
        if time.time() - t0 > 300:
            proc.kill()
            pytest.fail("no pre-training checkpoint appeared in time")
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait(timeout=60)
    killed_at = _checkpoint_steps(killed)[-1]
    assert killed_at < STEPS["model.tiny.pretrain_steps"]
    assert not (killed / "models" / "base" / "model.safetensors").exists()

    for root, name in ((killed, "base-resume.log"), (clean, "base-clean.log")):
        with (tmp_path / name).open("w") as fh:
            rc = subprocess.run(cli_args(root, "base", **steps), check=False, cwd=REPO, env=cli_env(), text=True,
                                stdout=fh, stderr=subprocess.STDOUT, timeout=600).returncode
        assert rc == 0, (tmp_path / name).read_text(errors="replace")[-3000:]
    out = (tmp_path / "base-resume.log").read_text(errors="replace")
    assert "resuming pre-train tiny base from checkpoint" in out, out[-2000:]
    assert "resuming" not in (tmp_path / "base-clean.log").read_text(errors="replace")

    a, b = killed / "models" / "base", clean / "models" / "base"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    info_a, info_b = (json.loads((d / "build_info.json").read_text()) for d in (a, b))
    assert info_a == info_b
    assert info_a["pretrain_steps"] == 16
    assert info_a["pretrain_compiled"] is (compile_mode == "always")
    assert info_a["heldout_perplexity_after"] < info_a["heldout_perplexity_before"]
    assert not _checkpoint_steps(killed)  # a finished pre-training leaves no checkpoint behind
