"""Provenance: what exactly produced a result. The git commit of the code, and content hashes (sha256)
of files and folders, so lineage records name the bytes that were used, not a lock file's claim.

``dir_sha256`` is the identity of a detector folder (every file, with its relative name); the stage-2
card records ``file_sha256`` of the split files it trained and validated on, the evaluate step the
hashes of the sets it scored and of the folder it scored, and the register step checks and tags them.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any


def _git(args: list[str], cwd: str | Path | None) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(cwd: str | Path | None = None) -> str:
    """``HEAD`` of the repository at ``cwd``, or ``unknown``."""
    out = _git(["rev-parse", "HEAD"], cwd)
    return out.stdout.strip() if out and out.returncode == 0 and out.stdout.strip() else "unknown"


def git_dirty(cwd: str | Path | None = None) -> str:
    """``true`` when tracked files differ from ``HEAD``, ``false`` when not, ``unknown`` without git."""
    out = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return "unknown" if out is None or out.returncode else str(bool(out.stdout.strip())).lower()


def file_sha256(path: str | Path, h: Any | None = None) -> str:
    """sha256 of a file's bytes (fed into ``h`` when given; its hex digest is returned)."""
    h = h or hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_sha256(d: str | Path) -> str:
    """Content hash of every file under ``d``, relative names included (a renamed file changes it)."""
    d = Path(d)
    h = hashlib.sha256()
    for p in sorted(x for x in d.rglob("*") if x.is_file()):
        h.update(p.relative_to(d).as_posix().encode())
        h.update(b"\0")
        file_sha256(p, h)
        h.update(b"\0")
    return h.hexdigest()


def path_sha256(p: str | Path) -> str:
    """:func:`dir_sha256` of a folder, :func:`file_sha256` of a file; FileNotFoundError otherwise."""
    p = Path(p)
    if p.is_dir():
        return dir_sha256(p)
    if p.is_file():
        return file_sha256(p)
    raise FileNotFoundError(f"cannot hash {p.resolve()}: no such file or folder")


__all__ = ["dir_sha256", "file_sha256", "git_commit", "git_dirty", "path_sha256"]
