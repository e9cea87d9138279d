"""Resumable training state, written atomically and verified before use.

A checkpoint is a folder ``ckpt-<global step>`` holding everything needed to continue bit-for-bit:
the trainable weights (adapter, plus ``modules_to_save`` copies), the optimizer and scheduler state,
the torch / python / numpy RNG states, the position in training (epoch, step in epoch, global step,
the epoch's data-permutation seed), the best epoch's weights so far and its metrics, and the
config hash of the run. It is written to a temporary folder first, then renamed, so a kill during
the write leaves at most a stray ``.tmp-*`` folder, never a half checkpoint under a real name. A
``manifest.json`` (written last) holds the sha256 of every file; on start the newest checkpoint
whose manifest and hashes check out and whose files load is used. A newest checkpoint that fails
is reported by name (warning) and the previous one is used -- never a silent restart. If every
checkpoint fails, that is an error, not a restart from scratch.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("chintox.checkpoint")

MANIFEST = "manifest.json"
PREFIX = "ckpt-"


class CheckpointError(RuntimeError):
    """No usable checkpoint although some exist, or a checkpoint from a different configuration."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    import numpy as np

    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_torch(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())


class CheckpointManager:
    """Checkpoints of one stage under ``root`` (``<paths.checkpoints>/<stage>``)."""

    def __init__(self, root: str | Path, keep: int, config_hash: str):
        if keep < 1:
            raise ValueError("keep_checkpoints must be >= 1")
        self.root = Path(root)
        self.keep = keep
        self.config_hash = config_hash

    def list(self) -> list[Path]:
        """Checkpoint folders, newest first (by global step in the name)."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
        return sorted(found, key=lambda p: int(p.name[len(PREFIX):]), reverse=True)

    def save(self, global_step: int, state: dict[str, Any], tensors: dict[str, Any]) -> Path:
        """Write ``state`` (JSON-able) and ``tensors`` (name -> torch-saveable) atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"{PREFIX}{global_step:09d}"
        tmp = self.root / f".tmp-{final.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files: dict[str, str] = {}
        for name, obj in tensors.items():
            _save_torch(obj, tmp / f"{name}.pt")
            files[f"{name}.pt"] = sha256_file(tmp / f"{name}.pt")
        state = {**state, "config_hash": self.config_hash, "global_step": global_step}
        (tmp / "state.json").write_text(json.dumps(state, indent=2, default=str))
        files["state.json"] = sha256_file(tmp / "state.json")
        manifest = {"files": files, "config_hash": self.config_hash, "global_step": global_step}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # same step saved twice (e.g. SIGTERM right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._fsync_dir()
        self._prune()
        return final

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.root, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        except OSError:  # pragma: no cover - not every filesystem allows it
            pass

    def _prune(self) -> None:
        for old in self.list()[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)
        for stray in self.root.glob(".tmp-*"):
            if not stray.name.endswith(f"-{os.getpid()}"):
                shutil.rmtree(stray, ignore_errors=True)

    def verify(self, ckpt: Path) -> str | None:
        """None if ``ckpt`` is intact, else why not."""
        man = ckpt / MANIFEST
        if not man.is_file():
            return "no manifest.json (incomplete write)"
        try:
            manifest = json.loads(man.read_text())
        except ValueError as e:
            return f"unreadable manifest: {e}"
        for name, digest in manifest.get("files", {}).items():
            p = ckpt / name
            if not p.is_file():
                return f"missing file {name}"
            if sha256_file(p) != digest:
                return f"sha256 mismatch for {name}"
        return None

    def load(self, ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        state = json.loads((ckpt / "state.json").read_text())
        manifest = json.loads((ckpt / MANIFEST).read_text())
        tensors = {
            name[:-3]: torch.load(ckpt / name, map_location="cpu", weights_only=False)
            for name in manifest["files"] if name.endswith(".pt")
        }
        return state, tensors

    def check_config(self) -> None:
        """Clear checkpoints written under a different configuration, saying so.

        Resuming them would mix two experiments; silently reusing them would be worse. They are
        deleted (a changed params file means a new run), with a warning naming the two hashes.
        """
        stale = []
        for ckpt in self.list():
            try:
                h = json.loads((ckpt / MANIFEST).read_text()).get("config_hash")
            except (OSError, ValueError):
                continue  # broken ones are reported by latest()
            if h != self.config_hash:
                stale.append((ckpt, h))
        for ckpt, h in stale:
            log.warning(
                "checkpoint %s was written with config hash %s, this run's is %s: the parameters "
                "changed, so it is deleted and training starts from scratch", ckpt, h, self.config_hash)
            shutil.rmtree(ckpt, ignore_errors=True)

    def latest(self) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
        """The newest intact checkpoint (path, state, tensors); None when there is none at all."""
        candidates = self.list()
        failures = []
        for ckpt in candidates:
            why = self.verify(ckpt)
            if why is None:
                try:
                    state, tensors = self.load(ckpt)
                except Exception as e:  # noqa: BLE001 - any load failure makes it unusable
                    why = f"cannot be loaded: {e}"
            if why is not None:
                log.warning("checkpoint %s is corrupted (%s); falling back to the previous one", ckpt, why)
                failures.append(f"{ckpt.name}: {why}")
                continue
            if state.get("config_hash") != self.config_hash:
                raise CheckpointError(
                    f"checkpoint {ckpt} belongs to config {state.get('config_hash')}, not {self.config_hash}")
            if failures:
                log.warning("resuming from %s instead of the newer corrupted checkpoint(s): %s",
                            ckpt, "; ".join(failures))
            return ckpt, state, tensors
        if failures:
            raise CheckpointError(
                f"every checkpoint under {self.root} is corrupted ({'; '.join(failures)}); refusing to "
                "restart silently from scratch -- delete the folder to start over")
        return None

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
