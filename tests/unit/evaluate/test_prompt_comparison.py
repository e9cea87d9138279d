"""The prompt comparison's collector: on fixture metrics, and end to end on a toy git + DVC repository
whose `evaluate` stage writes a metrics.json and a detector card (seconds, no model)."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap

import pytest
import yaml
from _eval_fixtures import REPO, commit_pipeline, fake_metrics, sh

from chintox.config import config_from_dict, load_config
from chintox.prompting import load_prompt
from tasks.prompt_comparison import (
    STUDY_PROMPT,
    PromptComparisonError,
    arm_record,
    build_comparison,
    experiment_command,
    load_comparison,
    param_differences,
    run_experiment,
    run_prompt_comparison,
)

OURS, STUDY = "1" * 64, "2" * 64


def _arm(name, prompt_sha, acc, det, eval_data="e" * 64, card_sha=None):
    return arm_record(name, f"prompts/{name}.txt", prompt_sha, fake_metrics(acc, det, eval_data), f"{name} metrics",
                      {"prompt_sha256": card_sha or prompt_sha})


def test_the_record_keeps_each_arms_figures_at_both_thresholds():
    rec = build_comparison(_arm("ours", OURS, 0.7, "a" * 64), _arm("study", STUDY, 0.6, "b" * 64), profile="tiny",
                           experiment={"name": "x"})
    assert rec["status"] == "measured" and rec["eval_data_sha256"]["toxicn_test"] == "e" * 64
    ours, study = rec["arms"]
    assert (ours["arm"], ours["prompt_sha256"], ours["detector_sha256"]) == ("ours", OURS, "a" * 64)
    assert study["cold_test"]["default"]["accuracy"] == 0.6 and study["cold_test"]["tuned"]["accuracy"] == 0.62
    assert ours["toxicn_test"]["threshold_tuned"] == 0.45 and ours["threshold_source"] == "detector.json"


def test_arms_that_are_not_comparable_are_refused():
    with pytest.raises(PromptComparisonError, match="different evaluation files"):
        build_comparison(_arm("ours", OURS, 0.7, "a"), _arm("study", STUDY, 0.6, "b", eval_data="f" * 64),
                         profile="tiny", experiment={})
    with pytest.raises(PromptComparisonError, match="same prompt"):
        build_comparison(_arm("ours", OURS, 0.7, "a"), _arm("study", OURS, 0.6, "b"), profile="tiny", experiment={})
    with pytest.raises(PromptComparisonError, match="not trained with that prompt"):
        _arm("study", STUDY, 0.6, "b", card_sha=OURS)
    broken = fake_metrics(0.6, "b")
    del broken["cold_test"]["tuned"], broken["eval_data_sha256"]
    with pytest.raises(PromptComparisonError, match=r"^exp metrics: no eval_data_sha256, cold_test\.tuned"):
        arm_record("study", "p", STUDY, broken, "exp metrics", {"prompt_sha256": STUDY})


def test_setting_the_base_key_changes_the_default_profiles_prompt_and_nothing_else():
    """`-S model.prompt_file=...` is the experiment's one change: the default profile keeps the base
    prompt (`prompt_file: {}`), so the base key is the effective one."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    ws = config_from_dict(raw)
    exp = json.loads(json.dumps(raw))
    exp["model"]["prompt_file"] = STUDY_PROMPT
    diff = param_differences(ws.to_dict(), config_from_dict(exp).to_dict())
    assert diff == {"model.prompt_file": [ws.model.prompt_file, STUDY_PROMPT]}
    assert ws.model.prompt_file != STUDY_PROMPT
    assert f"model.prompt_file={STUDY_PROMPT}" in experiment_command()


@pytest.mark.parametrize(("content", "expect"), [
    ("[1]", "a JSON object"),
    ("{", "not valid JSON"),
    ('{"status": "maybe"}', "status must be"),
    ('{"status": "measured", "arms": []}', "two arms"),
])
def test_a_malformed_comparison_file_names_itself(tmp_path, content, expect):
    p = tmp_path / "prompt_comparison.json"
    p.write_text(content)
    with pytest.raises(PromptComparisonError, match=expect) as e:
        load_comparison(p)
    assert str(p) in str(e.value)


# ------------------------------------------------------------------------------- end to end, toy repo

FAKE_EVAL = '''
"""The toy pipeline's stages: `validate` copies the raw file, `evaluate` "trains" a detector whose
figures depend on the prompt and writes its card and metrics.json, as the real steps do."""
import json, shutil, sys
from pathlib import Path
from chintox.config import load_config
from chintox.prompting import load_prompt
from chintox.provenance import dir_sha256, file_sha256

cfg = load_config("params.yaml")
if sys.argv[1] == "validate":
    Path("data").mkdir(exist_ok=True)
    shutil.copy(Path(cfg.data.raw_dir) / "raw.txt", "data/validated.txt")
else:
    prompt = load_prompt(cfg.model.prompt_file)
    det = Path("models/stage2")
    det.mkdir(parents=True, exist_ok=True)
    (det / "detector.json").write_text(json.dumps({"prompt_sha256": prompt.sha256}))
    (det / "weights.bin").write_text(prompt.sha256)
    acc = 0.7 if "toxicity" in cfg.model.prompt_file else 0.66
    block = {"accuracy": acc, "precision": 0.7, "recall": 0.8, "f1": acc, "auc": acc, "auc_hard": acc}
    eval_sha = file_sha256("data/validated.txt")
    sets = {s: {"n": 4, "threshold_tuned": 0.45, "default": block, "tuned": block} for s in ("toxicn_test", "cold_test")}
    Path("reports").mkdir(exist_ok=True)
    Path("reports/metrics.json").write_text(json.dumps({**sets, "threshold_default": 0.5,
        "threshold_source": "detector.json", "detector_sha256": dir_sha256(det),
        "eval_data_sha256": {"toxicn_test": eval_sha, "cold_test": eval_sha}}))
'''


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory):
    """A git + DVC repository: the real params.yaml and prompts, a raw-data dep outside the repository
    (like data.raw_dir), `dvc repro` committed, then the experiment `make prompt-comparison` runs."""
    root = tmp_path_factory.mktemp("toy")
    (root / "shared" / "datasets").mkdir(parents=True)
    (root / "shared" / "datasets" / "raw.txt").write_text("texts\n")
    repo = root / "repo"
    (repo / "prompts").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    for name in ("toxicity_zh.txt", "gao_study_zh.txt"):
        shutil.copy(REPO / "prompts" / name, repo / "prompts" / name)
    (repo / "fake_eval.py").write_text(FAKE_EVAL)
    py = sys.executable
    (repo / "dvc.yaml").write_text(textwrap.dedent(f"""\
        stages:
          validate:
            cmd: {py} fake_eval.py validate
            deps:
              - ${{data.raw_dir}}
            params:
              - data.raw_dir
            outs:
              - data/validated.txt
          evaluate:
            cmd: {py} fake_eval.py evaluate
            deps:
              - fake_eval.py
              - ${{model.prompt_file}}
              - data/validated.txt
            params:
              - model.prompt_file
              - profiles.${{profile}}.model.prompt_file
            outs:
              - models/stage2
            metrics:
              - reports/metrics.json:
                  cache: false
        """))
    commit_pipeline(repo)
    cfg = load_config(repo / "params.yaml")
    assert run_experiment(cfg, repo_dir=repo) is True
    return repo, cfg


def test_the_experiment_and_the_workspace_become_one_record(toy_repo):
    repo, cfg = toy_repo
    out = run_prompt_comparison(cfg, repo_dir=repo)
    assert out == repo / "reports" / "prompt_comparison.json"
    rec = load_comparison(out)
    head = sh(repo, "git", "rev-parse", "HEAD").strip()
    exp = rec["experiment"]
    assert exp["name"] == "prompt-study" and exp["baseline_commit"] == head
    assert exp["rev"] in sh(repo, "git", "for-each-ref", "--format=%(objectname)", "refs/exps").split()
    assert sh(repo, "git", "rev-parse", f"{exp['rev']}^").strip() == head  # the experiment's commit, on HEAD
    assert exp["params_changed"] == {"model.prompt_file": ["prompts/toxicity_zh.txt", STUDY_PROMPT]}
    assert exp["uncommitted_changes_included"] == []
    ours, study = rec["arms"]
    assert ours["prompt_sha256"] == load_prompt(repo / "prompts" / "toxicity_zh.txt").sha256
    assert study["prompt_sha256"] == load_prompt(repo / STUDY_PROMPT).sha256
    assert ours["toxicn_test"]["default"]["accuracy"] == 0.7 and study["toxicn_test"]["default"]["accuracy"] == 0.66
    ws_metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert ours["detector_sha256"] == ws_metrics["detector_sha256"] != study["detector_sha256"]
    # the workspace kept its own results: the experiment ran in a temporary copy
    assert ws_metrics["toxicn_test"]["default"]["accuracy"] == 0.7
    # a second `make prompt-comparison` on the same commit collects, it does not run again
    assert run_experiment(cfg, repo_dir=repo) is False


def test_an_experiment_that_differs_in_more_than_the_prompt_is_refused(toy_repo):
    repo, _ = toy_repo
    raw = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    raw["train"]["stage2"]["lora_r"] = 8  # not one the tiny profile sets
    cfg = config_from_dict(raw)
    with pytest.raises(PromptComparisonError, match=r"differ: \{'model.prompt_file': .*'train.stage2.lora_r'"):
        run_prompt_comparison(cfg, repo_dir=repo)


def test_an_experiment_of_another_commit_is_refused(toy_repo, tmp_path):
    repo, cfg = toy_repo
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, "git", "fetch", "-q", str(repo), "refs/exps/*:refs/exps/*")
    sh(clone, "git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "--allow-empty",
        "-m", "later")
    with pytest.raises(PromptComparisonError, match=r"no DVC experiment 'prompt-study' based on HEAD .* exists for"):
        run_prompt_comparison(cfg, repo_dir=clone)
