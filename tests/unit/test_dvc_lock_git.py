"""Every output DVC does not cache (``cache: false``: metrics, plots, Table 1) is in git, as dvc.lock
records it.

DVC keeps no copy of such a file, so git is its only home: one missing from a commit is lost to every
clone (``dvc pull`` cannot bring it, ``dvc metrics diff`` / ``dvc plots diff`` against that commit see
nothing, and ``dvc status`` calls its stage changed). Checked on the commit itself (``HEAD``'s dvc.lock
against ``HEAD``'s files), so a workspace mid-run does not matter. It caught ``reports/plots/`` being
git-ignored while dvc.yaml declared its files uncached, and would have caught the commit that deleted
``data/validation_summary.json``.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml
from testutil import resolve_dvc_template

from chintox.dvc_lock import dvc_lock_outs

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True).stdout


def uncached_outs(dvc_yaml: dict, params: dict) -> dict[str, list[str]]:
    """stage -> the paths of its ``cache: false`` outs, metrics and plots (templates resolved)."""
    found: dict[str, list[str]] = {}
    for stage, body in dvc_yaml["stages"].items():
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind, []):
                if isinstance(entry, dict):
                    ((path, opts),) = entry.items()
                    if (opts or {}).get("cache", True) is False:
                        found.setdefault(stage, []).append(resolve_dvc_template(path, params))
    return found


def test_every_uncached_out_is_committed_as_dvc_lock_records_it() -> None:
    if not (REPO / ".git").exists():
        pytest.fail(f"{REPO} is not a git checkout: this test checks what a commit holds")
    dvc_yaml, params = (yaml.safe_load(_git("show", f"HEAD:{name}")) for name in ("dvc.yaml", "params.yaml"))
    outs = uncached_outs(dvc_yaml, params)
    assert outs, "dvc.yaml declares no cache: false output: the parser no longer reads it"
    recorded = dvc_lock_outs(REPO, "HEAD")
    tracked = set(_git("ls-files", "-z").decode().split("\0"))
    problems = []
    for stage, paths in outs.items():
        for path in paths:
            if path not in recorded:
                problems.append(f"{stage}: {path} is not in dvc.lock (stage never locked?)")
            elif path not in tracked:
                problems.append(f"{stage}: {path} is uncached but not in git (git-ignored or deleted)")
            else:
                md5 = hashlib.md5(_git("show", f"HEAD:{path}")).hexdigest()
                if md5 != recorded[path]:
                    problems.append(f"{stage}: {path} in git has md5 {md5}, dvc.lock records {recorded[path]}")
    assert not problems, "\n".join(problems)


def test_the_parser_finds_templated_metrics_and_plots() -> None:
    dvc_yaml = {"stages": {"s": {
        "outs": ["${a.b}/model", {"x.json": {"cache": False}}],
        "metrics": [{"${a.b}/m.json": {"cache": False}}, {"cached.json": {}}],
        "plots": [{"p.csv": {"cache": False, "x": "fpr"}}, {"q.csv": None}],
    }}}
    assert uncached_outs(dvc_yaml, {"a": {"b": "reports"}}) == {"s": ["x.json", "reports/m.json", "p.csv"]}
