"""DVC is the flows' engine: every Prefect pipeline run is one named DVC experiment.

A flow never runs a step itself and keeps no cache of its own. It runs the stages of ``dvc.yaml`` with
``dvc exp run --temp`` (the flow's profile and overrides become ``--set-param`` values), so:

- DVC decides what is up to date: its cache and run-cache, shared by every experiment of this clone and,
  through the remote, with other machines; a stage whose code, params or data changed reruns, and only
  then;
- the run happens in DVC's temporary experiment workspace, so the checkout's own outputs and
  ``params.yaml`` are untouched, and the experiment is a git commit (``refs/exps/...``) holding the
  exact code, params and ``dvc.lock`` of the run: ``dvc exp apply <name>`` then ``dvc checkout``
  (or ``dvc pull`` on another machine) restores what it produced;
- its outputs are read back from the DVC cache at that commit (:func:`checked_out`) and pushed to the
  DVC remote (:func:`push`).

Paths that DVC resolves relative to the workspace and that must outlive the temporary copy (the raw data
outside the repository, training checkpoints, the MLflow store) are handed over as absolute paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chintox.dvc_lock import dvc_lock_outs

PROGRESS_EVERY_S = 10.0
# What `dvc exp run` prints for each stage it visits.
_STAGE_PATTERNS = (
    (re.compile(r"Running stage '([^']+)'"), "ran"),
    (re.compile(r"Stage '([^']+)' is cached - skipping run"), "restored from run-cache"),
    (re.compile(r"Stage '([^']+)' didn't change, skipping"), "unchanged"),
)


class DvcError(RuntimeError):
    """A DVC command failed; the message carries the command and the tail of its output."""


@dataclass(frozen=True)
class Experiment:
    """One finished ``dvc exp run``: its name, its commit, the commit it was based on, and what DVC did
    with each stage."""

    name: str
    rev: str
    baseline: str
    stages: dict[str, str] = field(default_factory=dict)


def dvc_bin() -> str:
    """The ``dvc`` of this Python environment (the flow's worker may not have it on PATH)."""
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.is_file() else (shutil.which("dvc") or "dvc")


def repo_root(start: str | Path = ".") -> Path:
    out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise DvcError(f"{Path(start).resolve()} is not inside a git repository; the flows run the DVC "
                       "pipeline of a checkout of this project")
    return Path(out.stdout.strip())


def _param_value(value: Any) -> str:
    """A ``--set-param`` value: DVC parses it as YAML, and JSON is YAML."""
    return value if isinstance(value, str) and re.fullmatch(r"[\w./:+-]+", value) else json.dumps(value)


def _has_key(d: Any, dotted: str) -> bool:
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return False
        d = d[k]
    return True


def set_params(root: Path, profile: str | None, overrides: dict[str, Any] | None) -> dict[str, str]:
    """``--set-param`` values of a run: the profile, the user's overrides, and the absolute forms of the
    paths that must not resolve inside the temporary workspace (raw data, the study, checkpoints).

    An override means the *effective* value, as ``load_config(overrides=...)`` reads it: a key that the
    selected profile sets is overridden inside that profile (``profiles.<name>.<key>``), since the profile
    is merged over the base sections; any other key is overridden in its base section."""
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")) or {}
    chosen = profile or params.get("profile")
    prof = (params.get("profiles") or {}).get(chosen) or {}
    out: dict[str, str] = {}
    if profile:
        out["profile"] = profile
    for key, value in (overrides or {}).items():
        out[f"profiles.{chosen}.{key}" if _has_key(prof, key) else key] = _param_value(value)
    for key in ("data.raw_dir", "data.study_dir", "paths.checkpoints"):
        if key in out or f"profiles.{chosen}.{key}" in out:
            continue
        sec, sub = key.split(".")
        value = (prof.get(sec) or {}).get(sub) or (params.get(sec) or {}).get(sub)
        if isinstance(value, str) and not Path(value).is_absolute():
            out[f"profiles.{chosen}.{key}" if _has_key(prof, key) else key] = str((root / value).resolve())
    return out


def experiment_name(flow: str) -> str:
    """``<flow>-<flow run name>-<8 hex>`` inside a Prefect flow run, else ``<flow>-<timestamp>``."""
    import time

    from prefect.runtime import flow_run

    if flow_run.id:
        return re.sub(r"[^\w-]", "-", f"{flow}-{flow_run.name}-{str(flow_run.id)[:8]}")
    return f"{flow}-{time.strftime('%Y%m%d-%H%M%S')}"


def subprocess_env(root: Path, tracking_uri: str) -> dict[str, str]:
    """The environment of the DVC run: the MLflow store as an absolute URI (a relative SQLite path would
    land in the temporary workspace and vanish with it); everything else inherited (the parent run id,
    offline switches)."""
    env = dict(os.environ)
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        tracking_uri = "sqlite:///" + str((root / tracking_uri[len("sqlite:///"):]).resolve())
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def parse_stages(output: str) -> dict[str, str]:
    """``{stage: ran | restored from run-cache | unchanged}`` from ``dvc exp run`` output."""
    stages: dict[str, str] = {}
    for line in output.splitlines():
        for pattern, what in _STAGE_PATTERNS:
            m = pattern.search(line)
            if m:
                stages[m.group(1)] = what
    return stages


def _exp_ref(root: Path, name: str) -> tuple[str, str]:
    """(experiment commit, baseline commit) of the newest experiment called ``name``."""
    out = subprocess.run(["git", "for-each-ref", "--sort=-committerdate",
                          "--format=%(objectname) %(refname)", "refs/exps"],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        sha, ref = line.split(" ", 1)
        parts = ref.split("/")  # refs/exps/<2 hex>/<38 hex>/<name>
        if len(parts) >= 5 and parts[-1] == name:
            return sha, parts[2] + parts[3]
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=root, capture_output=True,
                             text=True, check=False).stdout.strip() == "true"
    raise DvcError(f"dvc exp run finished but no experiment ref named {name!r} exists in {root}" + (
        ": it is a shallow clone, in which DVC records no experiment (`git fetch --unshallow` first; the "
        "*/remote deployments' pull steps do)" if shallow else ""))


def _log_lines(stream: Any, log: Callable[[str], None], every_s: float = PROGRESS_EVERY_S) -> Iterator[str]:
    """Lines of a child's output, each passed to ``log``. A progress bar redraws itself after carriage
    returns: a redraw is logged at most every ``every_s`` seconds, so a flow run's log shows progress
    without thousands of redraws; a finished line is always logged."""
    import time

    last = float("-inf")
    buf = ""
    for chunk in iter(lambda: stream.read1(65536), b""):
        buf += chunk.decode("utf-8", errors="replace")
        parts = re.split(r"(\r\n|\n|\r)", buf)
        buf = parts.pop()  # an unfinished line
        for text, sep in zip(parts[0::2], parts[1::2], strict=True):
            if sep == "\r":  # a redraw: logged only if it is at least every_s after the last one
                now = time.monotonic()
                if not text.strip() or now - last < every_s:
                    continue
                last = now
            if text.strip():
                log(text)
            if sep != "\r":
                yield text
    if buf.strip():
        log(buf)
        yield buf


def run_experiment(root: Path, name: str, params: dict[str, str], targets: list[str], env: dict[str, str],
                   log: Callable[[str], None] = print, force: bool = False, pull: bool = False) -> Experiment:
    """``dvc exp run --temp -n NAME -S k=v ... TARGETS``, its output streamed line by line to ``log``.

    ``pull`` (``--pull``, for a worker's fresh clone): a stage that another machine ran with the same code,
    params and data (its run-cache entry fetched from the DVC remote, ``dvc pull --run-cache``) is restored
    with its outputs from the remote instead of being run again. The remote must answer while it runs."""
    cmd = [dvc_bin(), "exp", "run", "--temp", *(["--pull"] if pull else []), "-n", name]
    for key, value in params.items():
        cmd += ["-S", f"{key}={value}"]
    if force:
        cmd.append("--force")
    cmd += targets
    log("$ " + " ".join(cmd))
    with subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        lines = list(_log_lines(proc.stdout, log))
        code = proc.wait()
    output = "\n".join(lines)
    if code != 0:
        raise DvcError(f"`{' '.join(cmd)}` failed with exit code {code}:\n" + "\n".join(lines[-60:]))
    rev, baseline = _exp_ref(root, name)
    return Experiment(name=name, rev=rev, baseline=baseline, stages=parse_stages(output))


def push(root: Path, rev: str, targets: list[str], remote: str | None = None) -> int:
    """Push the outputs of the stages ``targets`` and everything upstream of them, as they are at commit
    ``rev``, and the run-cache, to the DVC remote; returns the number of files transferred. A remote that
    cannot be reached raises :class:`DvcError` naming it; the outputs stay in this repository's cache."""
    from dvc.repo import Repo

    # The workspace's config resolves a relative remote URL against .dvc/; a view of another commit reads
    # the config from git and resolves it against "/" instead. Hand the resolved remotes over explicitly.
    with Repo(str(root)) as ws:
        remotes = {name: dict(conf) for name, conf in ws.config["remote"].items()}
        name = remote or ws.config["core"].get("remote")
    try:
        with Repo(str(root), config={"remote": remotes}) as repo:
            pushed = int(repo.push(targets=targets, with_deps=True, revs=[rev], workspace=False,
                                   run_cache=True, remote=remote) or 0)
            # DVC (3.67) leaves the targets' own outputs out of a with_deps push of a revision other than
            # the workspace (evaluate's predictions and eval_details.json were never pushed): push them by
            # name too.
            pushed += int(repo.push(targets=targets, revs=[rev], workspace=False, remote=remote) or 0)
            return pushed + _push_uncached(repo, root, rev, remote)
    except Exception as e:
        url = remotes.get(name or "", {}).get("url", "?")
        cause = f"{type(e).__name__}: {e}; {e.__cause__!r}" if e.__cause__ else f"{type(e).__name__}: {e}"
        raise DvcError(
            f"dvc push of experiment {rev[:12]} to the DVC remote {name!r} ({url}) failed ({cause[:500]}). "
            f"Nothing is lost: the outputs are in the DVC cache of {root} and the experiment's run-cache; "
            "once the remote answers, a re-run of the flow restores every stage without retraining and "
            "pushes them.") from e


def _push_uncached(repo: Any, root: Path, rev: str, remote: str | None) -> int:
    """Push every file output of ``dvc.lock`` at ``rev`` that the cache holds, for the ones marked
    ``cache: false`` (metrics, summaries): DVC keeps them in the cache for the run-cache, but ``dvc push``
    leaves them out, so another machine that found the stage in the pulled run-cache could not restore it
    and would run it again. Those already on the remote are not sent again."""
    from dvc_data.hashfile.hash_info import HashInfo

    hashes = {md5 for md5 in dvc_lock_outs(root, rev).values() if not md5.endswith(".dir")}
    cache = repo.cache.local
    present = [HashInfo("md5", h) for h in sorted(hashes) if cache.exists(h)]
    return len(repo.cloud.push(present, remote=remote).transferred) if present else 0


def push_experiment(root: Path, name: str, git_remote: str = "origin") -> None:
    """``dvc exp push GIT_REMOTE NAME``: the experiment's commit (code, params, dvc.lock) to the git
    remote, so the lineage a registered version names can be fetched from any machine."""
    cmd = [dvc_bin(), "exp", "push", git_remote, name]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise DvcError(f"`{' '.join(cmd)}` failed with exit code {r.returncode}:\n{(r.stdout + r.stderr)[-3000:]}")


@contextlib.contextmanager
def checked_out(root: Path, rev: str, paths: list[str]) -> Iterator[Path]:
    """A temporary folder holding ``paths`` as they are at commit ``rev`` (DVC outputs from the cache, git
    files from git), with their relative layout; removed afterwards."""
    from dvc.fs import DVCFileSystem

    dest = Path(tempfile.mkdtemp(prefix="chintox-exp-"))
    try:
        fs = DVCFileSystem(repo=str(root), rev=rev)
        for rel in paths:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not fs.exists(rel):
                raise DvcError(f"{rel} does not exist at {rev[:12]} (neither a DVC output in the cache nor a "
                               "git file)")
            if fs.isdir(rel):
                fs.get(rel, str(target), recursive=True)
            else:
                fs.get_file(rel, str(target))
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def lock_hashes(root: Path, rev: str, paths: list[str]) -> dict[str, str]:
    """``{path: md5}`` of the given outputs in ``dvc.lock`` at ``rev``: what ``dvc checkout`` restores."""
    return {p: h for p, h in dvc_lock_outs(root, rev).items() if p in paths}
