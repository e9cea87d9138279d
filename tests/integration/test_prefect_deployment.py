"""A real local Prefect server and process worker run the deployments of prefect.yaml on the micro
profile; the registry then holds the new version, promotion works, and `detect` answers with it."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import microdet
import pytest
import yaml
from integ_util import (
    REPO,
    VENV_BIN,
    PrefectStack,
    assert_completed,
    clone_worktree,
    sh,
    stage_table,
    wait_for,
)
from testutil import micro_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]

@pytest.fixture
def prefect_stack(tmp_path):
    stack = PrefectStack(tmp_path)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def _detect_cli(env: dict, cwd: Path, text: str, profile: str = "micro", sets: list[str] = ()) -> dict:
    out = sh([str(VENV_BIN / "python"), "-m", "chintox.cli", "detect", text, "--profile", profile, *sets],
              cwd, env)
    return json.loads([x for x in out.splitlines() if x.startswith("{")][-1])


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _out_md5(repo: Path, stages_md: str, out: str) -> str:
    """The md5 of ``out`` in the dvc.lock of the experiment a stages artifact names."""
    rev = re.search(r"\(commit `([0-9a-f]+)`", stages_md).group(1)
    lock = yaml.safe_load(sh(["git", "show", f"{rev}:dvc.lock"], repo, dict(os.environ)))
    return next(o["md5"] for st in lock["stages"].values() for o in st.get("outs", []) if o["path"] == out)


def test_train_detector_deployment_end_to_end(tmp_path):
    """A fresh clone; train-detector/local on the micro profile through a real Prefect server and worker:
    the pipeline runs as a DVC experiment (the clone's own outputs untouched), its outputs reach the DVC
    remote, the registered version's lineage restores exactly the files used on another clone, promotion
    and `detect` follow; a re-run retrains nothing and registers nothing new."""
    from mlflow import MlflowClient

    from chintox.provenance import dir_sha256

    repo = clone_worktree(tmp_path / "machine1")
    head = sh(["git", "rev-parse", "HEAD"], repo, dict(os.environ)).strip()
    committed_lock = yaml.safe_load((repo / "dvc.lock").read_text(encoding="utf-8"))
    stack = PrefectStack(tmp_path, repo)
    try:
        stack.start()
        stack.deploy("train-detector/local")
        stack.deploy("promote-detector/local")
        stack.start_worker()
        params = {"profile": "micro", "backend": "hf"}
        run = stack.run("train-detector", "local", params)
        print(f"train-detector: {run['state']['type']} in {run['seconds']} s")
        assert_completed(stack, run)
        arts = stack.artifacts(run["id"], {"train-detector-stages", "train-detector-metrics",
                                           "train-detector-registration"})
        first = stage_table(arts["train-detector-stages"])
        assert first == {s: "ran" for s in ("validate", "split", "base", "feedback_store", "feedback", "stage1",
                                            "stage2", "evaluate")}, first
        assert stack.task_states(run["id"], {"dvc-experiment", "dvc-push", "register"}) == {
            "dvc-experiment": "COMPLETED", "dvc-push": "COMPLETED", "register": "COMPLETED"}

        # the checkout itself is untouched: same params and tracked files, no outputs written into it
        assert sh(["git", "status", "--porcelain", "--untracked-files=no"], repo, stack.env) == ""
        for out in ("data/splits", "data/validated", "models"):
            assert not (repo / out).exists(), out

        os.environ.pop("MLFLOW_TRACKING_URI", None)
        c = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
        name = "chinese-toxicity-detector"
        mv = c.get_model_version_by_alias(name, "challenger")
        tags = mv.tags
        assert tags["profile"] == "micro" and tags["git_commit"] == head
        exp_rev, exp_name = tags["dvc.exp_rev"], tags["dvc.exp_name"]
        assert exp_name in arts["train-detector-stages"] and exp_rev[:12] in arts["train-detector-stages"]
        # nested runs under the flow's parent run
        parent_id = c.get_run(mv.run_id).data.tags.get("mlflow.parentRunId")
        assert parent_id and c.get_run(parent_id).data.tags.get("pipeline") == "train-detector"

        # another machine: clone the repository, fetch the experiment, pull its outputs from the remote
        other = tmp_path / "machine2"
        other.mkdir()
        env = stack.env
        sh(["git", "clone", "-q", str(repo), str(other / "repo")], tmp_path, env)
        sh(["git", "fetch", "-q", "origin", exp_rev], other / "repo", env)
        sh(["git", "checkout", "-q", exp_rev], other / "repo", env)
        (other / "shared").symlink_to(tmp_path / "machine1" / "shared")
        (other / "chintox-dvc-remote").symlink_to(tmp_path / "machine1" / "chintox-dvc-remote")
        sh([str(VENV_BIN / "dvc"), "pull", "-q", "split", "stage2"], other / "repo", env)
        pulled = other / "repo"
        lock = yaml.safe_load((pulled / "dvc.lock").read_text(encoding="utf-8"))
        lock_md5 = {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}
        old_md5 = {o["path"]: o["md5"] for st in committed_lock["stages"].values() for o in st.get("outs", [])}
        assert tags["dvc.md5.data/splits"] == lock_md5["data/splits"] != old_md5["data/splits"]
        assert tags["dvc.md5.models/stage2"] == lock_md5["models/stage2"]
        # the exact files the detector was trained and validated on, by content
        for split in ("toxicn_train", "toxicn_val"):
            digest = _sha256(pulled / "data" / "splits" / f"{split}.jsonl")
            assert [k for k, v in tags.items() if v == digest and split in k], (split, digest, tags)
        # micro's stage-1 records, not the committed tiny profile's
        n_stage1 = sum(1 for _ in (pulled / "data" / "splits" / "stage1.jsonl").open(encoding="utf-8"))
        assert n_stage1 == 200
        assert tags["detector_sha256"] == dir_sha256(pulled / "models" / "stage2")

        prom = stack.run("promote-detector", "local", {"profile": "micro"})
        assert_completed(stack, prom)
        champion = wait_for(lambda: (v := c.get_model_version_by_alias(name, "champion")) and v.version or None,
                            30, "champion alias")
        assert str(champion) == str(mv.version)
        out = _detect_cli(stack.env, repo, "你好")
        assert out["model_version"] == str(mv.version) and out["label"] in (0, 1)

        # nothing changed: DVC restores every stage, nothing retrains, nothing new is registered
        versions_before = len(c.search_model_versions(f"name='{name}'"))
        run2 = stack.run("train-detector", "local", params)
        assert_completed(stack, run2)
        print(f"train-detector re-run: {run2['seconds']} s")
        second_md = stack.artifacts(run2["id"], {"train-detector-stages"})["train-detector-stages"]
        second = stage_table(second_md)
        assert set(second) == set(first) and "ran" not in second.values(), second
        assert len(c.search_model_versions(f"name='{name}'")) == versions_before
        assert str(c.get_model_version_by_alias(name, "champion").version) == str(mv.version)

        # a changed line of training code (no comment: DVC hashes bytes) retrains, and only downstream
        train_py = repo / "tasks" / "train.py"
        train_py.write_text(train_py.read_text(encoding="utf-8") + "\n_RETRAIN_PROBE = 1\n", encoding="utf-8")
        sh(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qam", "probe"], repo,
            stack.env)
        run3 = stack.run("train-detector", "local", {**params, "register_model": False, "push_outputs": False})
        assert_completed(stack, run3)
        third_md = stack.artifacts(run3["id"], {"train-detector-stages"})["train-detector-stages"]
        third = stage_table(third_md)
        assert {k: third[k] for k in ("validate", "split", "base", "stage1", "stage2")} == {
            "validate": "restored from run-cache", "split": "restored from run-cache",
            "base": "restored from run-cache", "stage1": "ran", "stage2": "ran"}, third
        # training is deterministic here, so the retrained detector may be byte-identical; then, and only
        # then, DVC rightly restores `evaluate` instead of rescoring
        same = _out_md5(repo, second_md, "models/stage2") == _out_md5(repo, third_md, "models/stage2")
        assert third["evaluate"] == ("restored from run-cache" if same else "ran"), (same, third)
    finally:
        stack.stop()


def test_promote_deployment_and_detect(prefect_stack, tmp_path, detector_cache):
    """promote-detector/local moves champion to a registered micro detector; `detect` answers."""
    from tasks.register import run_register

    root = tmp_path / "run"
    cfg = microdet.micro_config(root)
    microdet.build_micro_detector(cfg, cache=detector_cache)
    microdet.write_metrics(cfg)
    microdet.write_eval_sets(cfg)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    version = run_register(cfg)["version"]
    prefect_stack.deploy("promote-detector/local")
    prefect_stack.start_worker()
    overrides = micro_overrides(root)
    run = prefect_stack.run("promote-detector", "local", {"profile": "micro", "overrides": overrides})
    print(f"promote-detector: {run['state']['type']} in {run['seconds']} s")
    assert_completed(prefect_stack, run)
    prefect_stack.artifacts(run["id"], {"promote-detector-decision"})
    sets = [x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]
    out = _detect_cli(prefect_stack.env, REPO, "你好", sets=sets)
    assert out["model_version"] == version
