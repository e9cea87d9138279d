"""DVC: `dvc repro validate split` on a small fixture; a second run does nothing; changing
data.val_fraction reruns only `split`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "data"))
from rawfix import write_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _sh(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.setdefault("GIT_AUTHOR_NAME", "t"), env.setdefault("GIT_AUTHOR_EMAIL", "t@t")
    env.setdefault("GIT_COMMITTER_NAME", "t"), env.setdefault("GIT_COMMITTER_EMAIL", "t@t")
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{out}"
    return out


def _ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def test_repro_is_incremental(tmp_path):
    # raw data lives at ../shared/datasets relative to the repo, as in dvc.yaml
    write_raw(tmp_path / "shared" / "datasets")
    repo = tmp_path / "repo"
    repo.mkdir()
    for rel in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / rel, repo / rel)
    for pkg in ("chintox", "tasks"):  # the stages' code, so code deps resolve as in the real checkout
        shutil.copytree(REPO / pkg, repo / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    params = repo / "params.yaml"
    params.write_text(re.sub(r"(?m)^profile: \w+", "profile: micro", params.read_text(encoding="utf-8")),
                      encoding="utf-8")
    dvc = str(Path(sys.executable).parent / "dvc")
    _sh(["git", "init", "-q"], repo)
    _sh([dvc, "init", "-q"], repo)
    _sh([dvc, "config", "core.analytics", "false"], repo)

    first = _sh([dvc, "repro", "validate", "split"], repo)
    assert _ran(first) == {"validate", "split"}, first
    assert (repo / "data" / "splits" / "toxicn_val.jsonl").is_file()
    assert (repo / "reports" / "data_docs" / "index.html").is_file()

    second = _sh([dvc, "repro", "validate", "split"], repo)
    assert _ran(second) == set(), second
    assert "up to date" in second.lower() or "didn't change" in second

    text = params.read_text(encoding="utf-8")
    params.write_text(re.sub(r"(?m)^(\s*val_fraction:) [0-9.]+", r"\1 0.3", text, count=1), encoding="utf-8")
    third = _sh([dvc, "repro", "validate", "split"], repo)
    assert _ran(third) == {"split"}, third
    metrics = _sh([dvc, "metrics", "show"], repo)
    assert "rows_read" in metrics or "sources" in metrics
