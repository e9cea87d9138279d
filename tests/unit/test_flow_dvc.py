"""The flows' DVC glue (flows/_dvc.py) on its own: --set-param values are the effective overrides, stage
outcomes are read from DVC's own words, and progress bars do not flood a flow run's log."""

from __future__ import annotations

import io
from pathlib import Path

import yaml
from testutil import REPO

from chintox.config import load_config
from flows import _dvc


def _params(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


def _apply(root: Path, sets: dict[str, str]) -> Path:
    """What ``dvc exp run -S`` does to params.yaml: set each dotted key (values parsed as YAML)."""
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    for key, value in sets.items():
        *parents, last = key.split(".")
        cur = raw
        for k in parents:
            cur = cur.setdefault(k, {})
        cur[last] = yaml.safe_load(value)
    out = root / "applied.yaml"
    out.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return out


def test_set_params_give_the_same_config_as_the_overrides(tmp_path):
    root = _params(tmp_path)
    overrides = {"train.stage2.lr": 0.0005,           # set by the micro profile: must land inside it
                 "train.stage2.weight_decay": 0.01,   # not set by the profile: base section
                 "evaluate.sets": ["toxicn_test"], "evaluate.backend": "hf"}
    sets = _dvc.set_params(root, "micro", overrides)
    assert sets["profile"] == "micro"
    assert sets["profiles.micro.train.stage2.lr"] == "0.0005"
    assert "train.stage2.lr" not in sets and sets["train.stage2.weight_decay"] == "0.01"
    expected = load_config(root / "params.yaml", profile="micro", overrides=overrides)
    got = load_config(_apply(root, sets), profile="micro")
    for section in ("train", "evaluate", "model", "mlflow"):
        assert getattr(got, section) == getattr(expected, section), section
    # paths that must outlive DVC's temporary workspace are absolute
    assert Path(sets["data.raw_dir"]) == (root / expected.data.raw_dir).resolve()
    assert Path(sets["paths.checkpoints"]).is_absolute()


def test_a_user_path_override_is_kept(tmp_path):
    sets = _dvc.set_params(_params(tmp_path), None, {"data.raw_dir": "/data/raw"})
    assert sets["data.raw_dir"] == "/data/raw" and "profile" not in sets


def test_stage_outcomes_come_from_dvc_output():
    out = ("Reproducing experiment 'x'\nStage 'validate' is cached - skipping run, checking out outputs\n"
           "Stage 'split' didn't change, skipping\nRunning stage 'stage2':\n> python -m chintox.cli stage2\n")
    assert _dvc.parse_stages(out) == {"validate": "restored from run-cache", "split": "unchanged",
                                      "stage2": "ran"}


def test_progress_redraws_are_thinned_but_lines_kept():
    class Pipe(io.BytesIO):
        def read1(self, n: int = -1) -> bytes:  # a pipe hands over small pieces
            return super().read1(5)

    data = b"Running stage 'a':\n" + b"".join(b"\rbar %d%%" % i for i in range(101)) + b"\nok\r\ntail"
    logged: list[str] = []
    lines = list(_dvc._log_lines(Pipe(data), logged.append, every_s=3600))
    assert lines == ["Running stage 'a':", "bar 100%", "ok", "tail"]
    assert logged == ["Running stage 'a':", "bar 0%", "bar 100%", "ok", "tail"]


def test_dvc_lock_is_read_at_the_commit_asked_for_and_a_missing_one_is_a_clear_error(tmp_path):
    import subprocess

    import pytest

    from chintox.dvc_lock import LockReadError, dvc_lock_outs

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (tmp_path / "README").write_text("no lock yet\n")
    git("add", "README")
    git("commit", "-qm", "no lock")
    first = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, check=True, capture_output=True,
                           text=True).stdout.strip()
    lock = {"schema": "2.0", "stages": {
        "split": {"cmd": "x", "outs": [{"path": "data/splits", "md5": "a" * 32 + ".dir"}]},
        "base": {"cmd": "y", "deps": [{"path": "data/splits", "md5": "a" * 32 + ".dir"}],
                 "outs": [{"path": "models/base", "md5": "b" * 32 + ".dir"}, {"path": "no-hash"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    git("add", "dvc.lock")
    git("commit", "-qm", "lock")
    assert dvc_lock_outs(tmp_path, "HEAD") == {"data/splits": "a" * 32 + ".dir", "models/base": "b" * 32 + ".dir"}
    assert _dvc.lock_hashes(tmp_path, "HEAD", ["models/base"]) == {"models/base": "b" * 32 + ".dir"}
    with pytest.raises(LockReadError, match=rf"dvc.lock at {first[:12]}"):
        dvc_lock_outs(tmp_path, first)
