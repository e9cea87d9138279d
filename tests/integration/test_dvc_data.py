"""DVC: `dvc repro validate split` on a small fixture. A second run does nothing and `dvc status` is
clean; a forced rerun writes byte-identical data; a value changed under `profiles.micro` (or in a base
section) reruns exactly the stage that reads it; an edited line of a stage's code shows in `dvc status`
for that stage."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "data"))
from rawfix import COLD_TRAIN, TOXICN_TRAIN, write_raw

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


def _changed(status: str) -> set[str]:
    """Stages that `dvc status` reports (their names start a line)."""
    return set(re.findall(r"(?m)^(\w+):\s*$", status))


def _set_param(params: Path, dotted: str, value) -> None:
    d = yaml.safe_load(params.read_text(encoding="utf-8"))
    *head, last = dotted.split(".")
    cur = d
    for k in head:
        cur = cur[k]
    assert last in cur, dotted
    cur[last] = value
    params.write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False), encoding="utf-8")


def _data_digests(data: Path) -> dict[str, str]:
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(data.rglob("*")) if p.is_file()}


def test_repro_is_incremental(tmp_path):
    # raw data lives at ../shared/datasets relative to the repo, as in dvc.yaml; a few rows that the
    # rules quarantine (leakage, duplicate, empty, conflicting labels), so every data output has rows
    dirty = TOXICN_TRAIN + [("地图炮没意思", 1), ("你们地域黑真的好无聊！", 1), ("  ", 0), ("今天天气不错，出去走走", 1)]
    write_raw(tmp_path / "shared" / "datasets", toxicn_train=dirty, cold_train=COLD_TRAIN + [("黑人就是懒", 1)])
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

    first_data = _data_digests(repo / "data")
    assert (repo / "data" / "quarantine.jsonl").stat().st_size > 0

    second = _sh([dvc, "repro", "validate", "split"], repo)
    assert _ran(second) == set(), second
    assert "up to date" in second.lower() or "didn't change" in second
    assert _changed(_sh([dvc, "status", "validate", "split"], repo)) == set()

    # the same inputs give the same bytes (validated parquet, quarantine, splits, summaries)
    forced = _sh([dvc, "repro", "--force", "validate", "split"], repo)
    assert _ran(forced) == {"validate", "split"}, forced
    assert _data_digests(repo / "data") == first_data
    assert _changed(_sh([dvc, "status", "validate", "split"], repo)) == set()

    # a profile value reruns exactly the stage that reads it (validate's output is unchanged here, so
    # split, downstream, is not rerun either)
    _set_param(params, "profiles.micro.data.max_text_chars", 4000)
    assert _ran(_sh([dvc, "repro", "validate", "split"], repo)) == {"validate"}
    _set_param(params, "profiles.micro.data.cqia_max_records", 2)
    assert _ran(_sh([dvc, "repro", "validate", "split"], repo)) == {"split"}

    text = params.read_text(encoding="utf-8")
    params.write_text(re.sub(r"(?m)^(\s*val_fraction:) [0-9.]+", r"\1 0.3", text, count=1), encoding="utf-8")
    third = _sh([dvc, "repro", "validate", "split"], repo)
    assert _ran(third) == {"split"}, third
    # `dvc metrics show` reports both stages' metrics (their numbers) as they are on disk, and the split
    # summary it shows is the rerun's: val_fraction 0.3, the val row count of the file written
    rels = ("data/validation_summary.json", "data/split_summary.json")
    out = _sh([dvc, "metrics", "show", "--json", *rels], repo)  # the JSON line, then any stderr
    shown = json.loads(out.splitlines()[0])[""]["data"]
    (v_shown, v_disk), (s_shown, s_disk) = ((shown[r]["data"], json.loads((repo / r).read_text(encoding="utf-8")))
                                            for r in rels)
    assert v_shown["totals"]["rows_read"] == v_disk["totals"]["rows_read"] > 0
    assert s_shown["params"]["val_fraction"] == s_disk["params"]["val_fraction"] == 0.3
    val_rows = len((repo / "data" / "splits" / "toxicn_val.jsonl").read_text(encoding="utf-8").splitlines())
    assert s_shown["splits"]["toxicn_val"]["rows"] == s_disk["splits"]["toxicn_val"]["rows"] == val_rows > 0

    # an edited line of code: the step's module, then a library module only validate imports
    with open(repo / "tasks" / "split.py", "a", encoding="utf-8") as f:
        f.write("_PROBE = 1\n")
    assert _changed(_sh([dvc, "status", "validate", "split"], repo)) == {"split"}
    with open(repo / "chintox" / "textnorm.py", "a", encoding="utf-8") as f:
        f.write("_PROBE = 1\n")
    assert _changed(_sh([dvc, "status", "validate", "split"], repo)) == {"validate", "split"}
