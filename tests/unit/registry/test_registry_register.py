"""Registration: a version with the detector behind a pyfunc, its tags, alias challenger, retries."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import microdet
import pytest
from testutil import REPO, refused_port


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_register_tags_alias_and_pyfunc(reg_cfg):
    from mlflow import MlflowClient

    from tasks.register import RegistrationError, run_register

    r = run_register(reg_cfg, lineage={"git_commit": "abc123", "dvc.exp_name": "exp-1"})
    assert r["version"] == "1" and not r["already_registered"]
    c = MlflowClient()
    mv = c.get_model_version_by_alias(reg_cfg.mlflow.registered_model, "challenger")
    assert str(mv.version) == "1"
    t = mv.tags
    assert t["profile"] == "micro"
    assert t["git_commit"] == "abc123" and t["dvc.exp_name"] == "exp-1"  # the orchestrator's lineage wins
    assert float(t["metrics.toxicn_test.tuned.f1"]) == pytest.approx(0.70)
    assert float(t["metrics.cold_test.tuned.accuracy"]) == pytest.approx(0.65)
    assert t["eval_sets"] == "cold_test,toxicn_test"
    # lineage from what was used: the folder registered, the card's data hashes, the files evaluated
    from chintox.card import DetectorCard
    from chintox.provenance import dir_sha256, file_sha256

    detector = Path(reg_cfg.paths.models) / "stage2"
    assert t["detector_sha256"] == dir_sha256(detector)
    assert all(t[k] == v for k, v in DetectorCard.read(detector).lineage.items())
    splits = Path(reg_cfg.data.out_dir) / "splits"
    assert {k: v for k, v in t.items() if k.startswith("eval_data.")} == {
        f"eval_data.{s}": file_sha256(splits / f"{s}.jsonl") for s in ("cold_test", "toxicn_test")}
    # the pyfunc: raw texts in, label and score out
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import get_model_info

    pyfunc_conf = get_model_info(f"models:/{reg_cfg.mlflow.registered_model}/1").flavors["python_function"]
    assert pyfunc_conf.get("model_code_path") and "python_model" not in pyfunc_conf  # code, not a pickle
    m = mlflow.pyfunc.load_model(f"models:/{reg_cfg.mlflow.registered_model}/1")
    out = m.predict(pd.DataFrame({"text": ["你好", "你是傻子"]}))
    assert list(out.columns) == ["label", "score"] and len(out) == 2
    assert all(0.0 <= s <= 1.0 for s in out["score"]) and set(out["label"]) <= {0, 1}
    # the run holds the evaluation metrics too (the gate's fallback)
    run = c.get_run(r["run_id"])
    assert run.data.metrics["toxicn_test.tuned.f1"] == pytest.approx(0.70)

    # same detector + metrics again: no duplicate version
    again = run_register(reg_cfg)
    assert again["version"] == "1" and again["already_registered"]
    versions = c.search_model_versions(f"name='{reg_cfg.mlflow.registered_model}'")
    assert [str(v.version) for v in versions] == ["1"]  # nothing new registered, not only the alias kept
    # a registration cut off after the version, before its alias (the store went away): a re-run finishes it
    c.delete_registered_model_alias(reg_cfg.mlflow.registered_model, "challenger")
    resumed = run_register(reg_cfg)
    assert resumed["version"] == "1" and resumed["already_registered"] and resumed["aliases"] == ["challenger"]
    assert str(c.get_model_version_by_alias(reg_cfg.mlflow.registered_model, "challenger").version) == "1"
    # a new detector: its old metrics are refused; evaluated, it is a new version and challenger moves
    microdet.retrain(reg_cfg, "second")
    with pytest.raises(RegistrationError, match="another detector"):
        run_register(reg_cfg)
    microdet.write_metrics(reg_cfg)
    head_before = _head()
    third = run_register(reg_cfg)  # no lineage given: this checkout's own commit is recorded
    heads = {head_before, _head()}  # others may commit meanwhile: either end of the call is right
    git_commit = c.get_model_version(reg_cfg.mlflow.registered_model, third["version"]).tags["git_commit"]
    assert git_commit in heads, (git_commit, heads)
    assert third["version"] == "2"
    assert str(c.get_model_version_by_alias(reg_cfg.mlflow.registered_model, "challenger").version) == "2"


def test_register_needs_metrics_and_detector(tmp_path, detector_cache):
    from chintox.pyfunc import DetectorFolderError
    from tasks.register import RegistrationError, run_register

    cfg = microdet.micro_config(tmp_path)
    with pytest.raises(DetectorFolderError, match="stage2"):
        run_register(cfg)
    microdet.build_micro_detector(cfg, cache=detector_cache)
    with pytest.raises(RegistrationError, match="evaluate"):
        run_register(cfg)


def test_unreachable_server_clear_error_then_rerun_registers(reg_cfg, monkeypatch, caplog):
    import chintox.registry as registry_mod
    from tasks.register import RegistryUnavailableError, run_register

    # The retry schedule is checked by what it asks for, not by a wall clock: every backoff sleep of
    # chintox.registry's with_retries is recorded (and really taken); other callers of time.sleep are untouched.
    real_sleep, backoffs = registry_mod.time.sleep, []

    def sleep(seconds: float) -> None:
        if sys._getframe(1).f_globals.get("__name__") == registry_mod.__name__:
            backoffs.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(registry_mod.time, "sleep", sleep)
    monkeypatch.setenv("CHINTOX_MLFLOW_ATTEMPTS", "3")
    detector = Path(reg_cfg.paths.models) / "stage2"
    before = sorted(p.relative_to(detector) for p in detector.rglob("*"))
    with refused_port() as port, caplog.at_level(logging.WARNING, logger=registry_mod.__name__):
        uri = f"http://127.0.0.1:{port}"  # held by this process, never listening: refused throughout
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        with pytest.raises(RegistryUnavailableError) as ei:
            run_register(reg_cfg)
    msg = str(ei.value)
    assert uri in msg and "3 attempts" in msg and "re-run" in msg
    # 3 attempts, 2 backoffs of CHINTOX_MLFLOW_BACKOFF_S (0.2, conftest) doubling: bounded, no hang
    assert backoffs == [pytest.approx(0.2), pytest.approx(0.4)], backoffs
    attempts = [r for r in caplog.records if "not reachable (attempt" in r.getMessage()]
    assert [r.getMessage().split("(attempt ")[1][:3] for r in attempts] == ["1/3", "2/3", "3/3"]
    # the trained detector and the metrics are untouched
    assert sorted(p.relative_to(detector) for p in detector.rglob("*")) == before
    assert (Path(reg_cfg.paths.reports) / "metrics.json").is_file()
    # the store is back (here: the SQLite store of params): the re-run registers, no retraining
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    r = run_register(reg_cfg)
    assert r["version"] == "1" and r["aliases"] == ["challenger"]


def test_connection_error_classification():
    from mlflow.exceptions import MlflowException

    from chintox.registry import is_connection_error

    assert is_connection_error(ConnectionRefusedError("x"))
    assert is_connection_error(MlflowException("API request to http://x failed with exception "
                                               "Max retries exceeded with url"))
    assert not is_connection_error(MlflowException("RESOURCE_DOES_NOT_EXIST: no such model"))
    assert not is_connection_error(ValueError("bad"))
