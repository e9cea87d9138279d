"""``dvc.lock`` at a commit: what a commit's pipeline says it produced. The one reader, shared by the
flows (registration tags, pushes of outputs DVC leaves out) and ``make seeds`` (same splits and base);
and :func:`dvc_md5`, the md5 that ``dvc.lock`` would record for a path of the workspace, so that what is
on disk can be compared with a record of it (Table 1's seeds section)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml


class LockReadError(RuntimeError):
    """``dvc.lock`` cannot be read at a commit (no such commit, no ``dvc.lock`` there, or not YAML)."""


def dvc_lock_outs(repo: str | Path, rev: str) -> dict[str, str]:
    """``{path: md5}`` of every output ``dvc.lock`` records at commit ``rev`` of the git repository
    ``repo``: what ``dvc checkout`` of that commit restores."""
    try:
        out = subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=repo, capture_output=True, text=True,
                             check=False)
    except OSError as e:
        raise LockReadError(f"cannot read dvc.lock at {rev[:12]} in {repo}: git could not be run ({e})") from e
    if out.returncode != 0:
        raise LockReadError(f"cannot read dvc.lock at {rev[:12]} in {repo}: {out.stderr.strip()}")
    try:
        stages = (yaml.safe_load(out.stdout) or {}).get("stages", {})
    except yaml.YAMLError as e:
        raise LockReadError(f"dvc.lock at {rev[:12]} in {repo} is not valid YAML: {e}") from e
    return {o["path"]: o["md5"] for st in stages.values() for o in st.get("outs", []) or []
            if o.get("path") and o.get("md5")}


def dvc_md5(path: str | Path) -> str | None:
    """The md5 DVC records in ``dvc.lock`` for the file or folder ``path`` as it is now (a folder's ends in
    ``.dir``), computed by DVC's own hashing without writing to any cache; None when it does not exist."""
    import tempfile

    from dvc.fs import LocalFileSystem
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB

    p = Path(path)
    if not p.exists():
        return None
    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:
        *_, obj = build(HashFileDB(fs, scratch), str(p.resolve()), fs, "md5", dry_run=True)
    return obj.hash_info.value


__all__ = ["LockReadError", "dvc_lock_outs", "dvc_md5"]
