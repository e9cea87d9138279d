"""What the commands built on DVC experiments share (``make prompt-comparison``, ``make seeds``): finding
an experiment of ``HEAD`` by name, running one, reading its files and comparing its parameters with the
workspace's. One error type, :class:`ExperimentError`, whose message says what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from chintox.dvc_lock import LockReadError, dvc_lock_outs


class ExperimentError(RuntimeError):
    """An experiment cannot be run, found or read; the message says what to do."""


class ExperimentNotFound(ExperimentError):
    """No experiment of that name is based on ``HEAD`` (git itself worked)."""


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ExperimentError(f"`git {' '.join(args)}` failed in {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


def find_experiment(repo: Path, name: str, command: str) -> tuple[str, str]:
    """(commit, baseline commit) of the experiment ``name`` based on ``HEAD``; the workspace arm is
    ``HEAD`` too, so an experiment of another commit is refused, naming the commits it exists for."""
    head = git(repo, "rev-parse", "HEAD")
    found: dict[str, str] = {}
    for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").splitlines():
        sha, ref = line.split(" ", 1)
        parts = ref.split("/")  # refs/exps/<2 hex>/<38 hex>/<name>
        if len(parts) == 5 and parts[4] == name:
            found[parts[2] + parts[3]] = sha
    if head not in found:
        other = f" (it exists for {', '.join(b[:12] for b in sorted(found))})" if found else ""
        raise ExperimentNotFound(f"no DVC experiment {name!r} based on HEAD {head[:12]}{other}: run `{command}`")
    return found[head], head


def lock_outs(repo: Path, rev: str) -> dict[str, str]:
    """``{path: md5}`` of every output ``dvc.lock`` records at commit ``rev``
    (:func:`chintox.dvc_lock.dvc_lock_outs`), its failure as an :class:`ExperimentError`."""
    try:
        return dvc_lock_outs(repo, rev)
    except LockReadError as e:
        raise ExperimentError(str(e)) from e


def changed_beyond_results(repo: Path, baseline: str, rev: str, params_file: str = "params.yaml") -> list[str]:
    """Files the experiment commit ``rev`` changed against ``baseline`` other than the parameter file,
    ``dvc.lock`` and the pipeline's own outputs (``dvc.lock``'s outs at ``rev``, and what lies under
    them): code or data that a ``--temp`` experiment picked up from an unclean workspace."""
    outs = [o.rstrip("/") for o in lock_outs(repo, rev)]
    changed = git(repo, "diff", "--name-only", baseline, rev).splitlines()
    return [f for f in changed if f not in (params_file, "dvc.lock")
            and not any(f == o or f.startswith(o + "/") for o in outs)]


def dvc_executable() -> str:
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.is_file() else (shutil.which("dvc") or "dvc")


def require_up_to_date(repo: Path, target: str, why: str) -> None:
    """Refuse to start when the workspace's ``target`` stage is stale: the workspace is one of the arms."""
    if subprocess.run([dvc_executable(), "status", "-q", "--with-deps", target], cwd=repo, check=False).returncode:
        raise ExperimentError(f"the workspace's {target} stage is not up to date (`dvc status {target}` says "
                              f"why): {why}")


def mirror_sibling_folders(cfg: Any, repo: Path) -> list[Path]:
    """``dvc exp run --temp`` runs in ``<repo>/.dvc/tmp/exps/standalone/<temp dir>``, where a parameter
    path such as ``../shared/study`` (``data.raw_dir``, ``data.study_dir``) resolves to
    ``.dvc/tmp/exps/standalone/shared``. Link each such top folder there to the one beside the
    repository, so that the copy reads what the workspace reads, under the same relative path (and so
    the same run-cache keys). Returns the links made."""
    root = repo / ".dvc" / "tmp" / "exps" / "standalone"
    made = []
    for value in (cfg.data.raw_dir, cfg.data.study_dir):
        parts = Path(value).parts
        if Path(value).is_absolute() or len(parts) < 2 or parts[0] != ".." or parts[1] == "..":
            continue
        target, link = (repo.parent / parts[1]).resolve(), root / parts[1]
        if link.is_symlink() and link.resolve() != target:
            link.unlink()  # dangling, or left by a checkout that lay elsewhere
        if target.is_dir() and not link.is_symlink() and not link.exists():
            root.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target, target_is_directory=True)
            made.append(link)
    return made


def run_experiment_command(cfg: Any, repo: Path, command: list[str]) -> None:
    """Run ``dvc exp run ...`` (``command``, starting with ``dvc``) in ``repo``, its output to ours. A
    relative SQLite tracking store is pinned to the workspace's: the temporary copy is deleted. Folders
    beside the repository that parameters name are visible from the copy (:func:`mirror_sibling_folders`)."""
    mirror_sibling_folders(cfg, repo)
    env = dict(os.environ)
    uri = cfg.mlflow.tracking_uri
    if "MLFLOW_TRACKING_URI" not in env and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        env["MLFLOW_TRACKING_URI"] = "sqlite:///" + str(repo / uri[len("sqlite:///"):])
    cmd = [dvc_executable(), *command[1:]]
    print("$ " + " ".join(command), flush=True)
    if subprocess.run(cmd, cwd=repo, env=env, check=False).returncode != 0:
        raise ExperimentError(f"`{' '.join(command)}` failed (its output is above)")


def read_json(text: str | bytes, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExperimentError(f"{source}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ExperimentError(f"{source}: a JSON object was expected")
    return data


def param_differences(ours: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> dict[str, list]:
    """``{dotted key: [ours, theirs]}`` where two effective configs (``Config.to_dict()``) differ."""
    out: dict[str, list] = {}
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(param_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = [a, b]
    return out


__all__ = ["ExperimentError", "ExperimentNotFound", "changed_beyond_results", "dvc_executable", "find_experiment", "git", "lock_outs",
           "mirror_sibling_folders", "param_differences", "read_json", "require_up_to_date",
           "run_experiment_command"]
