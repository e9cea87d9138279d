"""Resume: a stage-2 run killed mid-epoch (SIGTERM, then SIGKILL) and started again ends with the
same validation metrics and weights as an uninterrupted run.

Tolerance: exact. On CPU with a fixed thread count every kernel here is deterministic, and the
checkpoint restores weights, optimizer, scheduler, RNG states and the data order, so the resumed run
replays the very same updates; the metrics are compared with ``==`` and the adapters bit for bit.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from _train_fixtures import REPO, cli_args, cli_env, workspace


def _start(root: Path, log: Path) -> subprocess.Popen:
    """`chintox stage2` in a subprocess, its output going to ``log``: a file, never a pipe nobody
    reads while polling (a full pipe would block the child's progress output, and its training)."""
    with log.open("w") as fh:
        return subprocess.Popen(cli_args(root, "stage2", **SMALL), cwd=REPO, env=cli_env(), text=True,
                                stdout=fh, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    proc.wait(timeout=timeout)
    return log.read_text(errors="replace")


def _wait_for_ckpt(root: Path, proc: subprocess.Popen, newer_than: int, log: Path, timeout: float = 240) -> int:
    """Poll until a mid-epoch checkpoint with global step > ``newer_than`` exists; return its step."""
    ck = root / "checkpoints" / "stage2"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            out = log.read_text(errors="replace")
            pytest.fail(f"training ended (rc={proc.returncode}) before it could be interrupted:\n{out[-3000:]}")
        steps = sorted(int(p.name[5:]) for p in ck.glob("ckpt-*") if (p / "manifest.json").is_file()) \
            if ck.is_dir() else []
        if steps and steps[-1] > newer_than:
            return steps[-1]
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no checkpoint appeared in time")


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


# smaller than the micro default to keep the test short: 6 steps per epoch, a checkpoint every 2
SMALL = {"train.stage2.max_samples": 96, "train.stage2.save_every_steps": 2}


@pytest.mark.slow
def test_sigterm_then_sigkill_then_resume_matches_uninterrupted(tmp_path):
    from tasks.train import run_stage2

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cfg_killed = workspace(killed, **SMALL)
    cfg_clean = workspace(clean, **SMALL)
    steps_per_epoch = cfg_killed.train.stage2.max_samples // cfg_killed.train.stage2.batch_size
    every = cfg_killed.train.stage2.save_every_steps
    assert cfg_killed.train.stage2.epochs >= 2 and steps_per_epoch > every  # mid-epoch saves exist

    # 1) SIGTERM after the first checkpoint: a checkpoint is written at the next step, exit code != 0.
    log1 = tmp_path / "stage2-term.log"
    proc = _start(killed, log1)
    first = _wait_for_ckpt(killed, proc, 0, log1)
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, log1, 120)
    assert proc.returncode != 0, out[-2000:]
    assert "SIGTERM: checkpoint" in out, out[-2000:]
    after_term = max(int(p.name[5:]) for p in (killed / "checkpoints" / "stage2").glob("ckpt-*"))
    assert after_term > first  # the interrupt wrote its own checkpoint
    assert not (killed / "models" / "stage2").exists()

    # 2) Same command again; SIGKILL once it has written a newer checkpoint (no chance to clean up).
    log2 = tmp_path / "stage2-kill.log"
    proc = _start(killed, log2)
    _wait_for_ckpt(killed, proc, after_term, log2)
    proc.kill()
    out = _finish(proc, log2, 60)
    assert "resuming stage2 from checkpoint" in out, out[-2000:]

    # 3) Resume to the end (in-process: same code as the command), and an uninterrupted run.
    resumed = run_stage2(cfg_killed)
    uninterrupted = run_stage2(cfg_clean)
    m_res = json.loads((resumed / "val_metrics.json").read_text())
    m_ref = json.loads((uninterrupted / "val_metrics.json").read_text())
    assert m_res["history"] == m_ref["history"]
    assert m_res["at_0.5"] == m_ref["at_0.5"] and m_res["threshold"] == m_ref["threshold"]
    a, b = _adapter(resumed), _adapter(uninterrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    det = json.loads((resumed / "detector.json").read_text())
    assert det["config_hash"] == json.loads((uninterrupted / "detector.json").read_text())["config_hash"]
