"""detect: the champion answers (Python API and CLI), with its version; clear error without one."""

from __future__ import annotations

import json

import pytest


def test_detect_needs_a_champion(reg_cfg):
    from tasks.detect import NoChampionError, detect_texts

    with pytest.raises(NoChampionError, match="champion"):
        list(detect_texts(reg_cfg, ["你好"]))


def test_detect_api_and_cli_answer_with_champion_version(reg_cfg, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from chintox.cli import app
    from tasks.detect import detect_texts
    from tasks.promote import run_promote
    from tasks.register import run_register

    v = run_register(reg_cfg)["version"]
    assert run_promote(reg_cfg)["decision"] == "promoted"
    rows = list(detect_texts(reg_cfg, ["你好", "", "你是傻子"]))
    assert [r["text"] for r in rows] == ["你好", "你是傻子"]
    for r in rows:
        assert r["model_version"] == v and r["label"] in (0, 1) and 0.0 <= r["score"] <= 1.0

    # the CLI, with the same micro config rooted in tmp (through --set)
    sets = [f"{k}={getattr(getattr(reg_cfg, k.split('.')[0]), k.split('.')[1])}" for k in (
        "mlflow.tracking_uri", "mlflow.artifact_root", "paths.models", "paths.reports", "data.out_dir")]
    common = ["--profile", "micro"] + [x for s in sets for x in ("--set", s)]
    runner = CliRunner()
    res = runner.invoke(app, ["detect", "你好", *common])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["model_version"] == v and out["text"] == "你好"
    f = tmp_path / "texts.txt"
    f.write_text("一\n二\n\n三\n", encoding="utf-8")
    res = runner.invoke(app, ["detect", "--file", str(f), *common])
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["text"] for x in res.stdout.strip().splitlines() if x.startswith("{")] == ["一", "二", "三"]
    res = runner.invoke(app, ["detect", *common], input="甲\n乙\n")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.strip().splitlines() if x.startswith("{")]
    assert [x["text"] for x in lines] == ["甲", "乙"] and all(x["model_version"] == v for x in lines)
