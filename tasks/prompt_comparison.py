"""The prompt comparison: the study's prompt against ours, same recipe, so the choice is measured.

One arm is the workspace: ``reports/metrics.json`` of ``dvc repro`` (the profile's own prompt). The
other is a DVC experiment of the same pipeline with one parameter changed, ``model.prompt_file``
(:func:`experiment_command`)::

    dvc exp run --temp --allow-missing -n prompt-study -S model.prompt_file=prompts/gao_study_zh.txt evaluate

``--temp`` leaves the workspace alone; ``--allow-missing`` lets the temporary copy skip the validate
stage, whose raw data lies outside the repository (``data.raw_dir`` does not resolve from the copy) and
did not change. So the experiment's params differ from the workspace's in the prompt and nothing else,
which :func:`run_prompt_comparison` checks before it reads the experiment's ``metrics.json`` and
detector card at the experiment's commit. It also checks that both arms scored the same evaluation
files and that each detector records the sha256 of its own arm's prompt, then writes
``<reports>/prompt_comparison.json``: both prompts' sha256, the experiment's name and commit, the commit
it was based on, and each arm's ToxiCN test / COLD test figures at 0.5 and at the threshold tuned on
ToxiCN val (recorded in detector.json: nothing here is tuned, least of all on a test set). Table 1
(:mod:`tasks.table1`) shows the two arms from that file.

``make prompt-comparison`` is ``python -m tasks.prompt_comparison --run``: the experiment (skipped
when one of that name exists for ``HEAD``; ``dvc exp remove prompt-study`` to run it again), then the
record. Without ``--run`` it only collects.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from chintox.card import CARD_FILE
from chintox.config import config_from_dict, load_config
from chintox.prompting import Prompt, load_prompt
from tasks.experiments import (
    ExperimentError,
    git,
    param_differences,
    read_json,
    require_up_to_date,
    run_experiment_command,
)
from tasks.experiments import find_experiment as _find_experiment

COMPARISON_FILE = "prompt_comparison.json"
DEFAULT_EXPERIMENT = "prompt-study"
STUDY_PROMPT = "prompts/gao_study_zh.txt"
CHANGED_PARAM = "model.prompt_file"
SETS = ("toxicn_test", "cold_test")
COMMAND = "make prompt-comparison"
DETECTOR = "stage2"  # the evaluate stage's detector, under paths.models
TARGET = "evaluate"  # the stage whose metrics the arms compare
NOT_RUN = {"status": "not run", "how": f"`{COMMAND}` (see prompts/README.md), then `dvc repro table1`"}


PromptComparisonError = ExperimentError  # the comparison cannot be run, collected or read


# ------------------------------------------------------------------------------- building the record


def arm_record(name: str, prompt_file: str, prompt_sha256: str, metrics: dict[str, Any], source: str,
               card: dict[str, Any]) -> dict[str, Any]:
    """One arm: its prompt, its detector and that detector's figures on each evaluation set."""
    missing = [k for k in ("detector_sha256", "eval_data_sha256", "threshold_default", "threshold_source",
                           *SETS) if k not in metrics]
    missing += [f"{s}.{k}" for s in SETS if s in metrics for k in ("n", "default", "tuned", "threshold_tuned")
                if k not in metrics[s]]
    if missing:
        raise PromptComparisonError(f"{source}: no {', '.join(missing)} (not the evaluate step's metrics.json?)")
    if card.get("prompt_sha256") != prompt_sha256:
        raise PromptComparisonError(
            f"arm {name!r}: its detector records prompt_sha256 {card.get('prompt_sha256')}, but "
            f"{prompt_file} hashes to {prompt_sha256}: the detector was not trained with that prompt")
    return {
        "arm": name,
        "prompt_file": prompt_file,
        "prompt_sha256": prompt_sha256,
        "metrics_source": source,
        "detector_sha256": metrics["detector_sha256"],
        "threshold_default": metrics["threshold_default"],
        "threshold_source": metrics["threshold_source"],
        **{s: {"n": metrics[s]["n"], "threshold_tuned": metrics[s]["threshold_tuned"],
               "default": metrics[s]["default"], "tuned": metrics[s]["tuned"]} for s in SETS},
        "eval_data_sha256": metrics["eval_data_sha256"],
    }


def build_comparison(ours: dict[str, Any], study: dict[str, Any], *, profile: str,
                     experiment: dict[str, Any]) -> dict[str, Any]:
    """The record written to ``prompt_comparison.json``; refuses arms that are not comparable."""
    if ours["prompt_sha256"] == study["prompt_sha256"]:
        raise PromptComparisonError(
            f"both arms use the same prompt ({ours['prompt_file']}, {study['prompt_file']}): the profile "
            f"{profile!r} already trains with it, so there is nothing to compare")
    if ours["eval_data_sha256"] != study["eval_data_sha256"]:
        raise PromptComparisonError(
            f"the arms scored different evaluation files ({ours['eval_data_sha256']} vs "
            f"{study['eval_data_sha256']}): the experiment's data differ from the workspace's")
    eval_data = ours["eval_data_sha256"]
    arms = [{k: v for k, v in a.items() if k != "eval_data_sha256"} for a in (ours, study)]
    return {"status": "measured", "command": COMMAND, "profile": profile, "changed_param": CHANGED_PARAM,
            "experiment": experiment, "eval_data_sha256": eval_data, "arms": arms}


# ------------------------------------------------------------------------------- reading git and DVC


def find_experiment(repo: Path, name: str) -> tuple[str, str]:
    """(commit, baseline commit) of the experiment ``name`` based on ``HEAD`` (:mod:`tasks.experiments`)."""
    return _find_experiment(repo, name, COMMAND)


def experiment_command(name: str = DEFAULT_EXPERIMENT, study_prompt: str = STUDY_PROMPT) -> list[str]:
    """The experiment: the workspace's pipeline up to ``evaluate`` with ``model.prompt_file`` changed.
    The base key is set: every profile that keeps the base prompt says ``prompt_file: {}``."""
    return ["dvc", "exp", "run", "--temp", "--allow-missing", "-n", name, "-S", f"{CHANGED_PARAM}={study_prompt}",
            TARGET]


def run_experiment(cfg: Any, name: str = DEFAULT_EXPERIMENT, study_prompt: str = STUDY_PROMPT,
                   repo_dir: str | Path = ".") -> bool:
    """Run :func:`experiment_command` in ``repo_dir`` unless an experiment ``name`` of ``HEAD`` exists;
    returns whether it ran. Refuses to start when the workspace arm is not current (its ``evaluate``
    is out of date) or the study's prompt is not in git (a temporary copy holds git files only)."""
    repo = Path(repo_dir).resolve()
    try:
        find_experiment(repo, name)
        print(f"experiment {name!r} of HEAD exists: collecting it (`dvc exp remove {name}` to run it again)")
        return False
    except PromptComparisonError:
        pass
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", study_prompt], cwd=repo, capture_output=True,
                             check=False)
    if tracked.returncode != 0:
        raise PromptComparisonError(f"{study_prompt} is not in git: commit it first (`dvc exp run --temp` "
                                    "copies git files only)")
    require_up_to_date(repo, TARGET, f"run `dvc repro {TARGET}` first, it is the other arm")
    run_experiment_command(cfg, repo, experiment_command(name, study_prompt))
    return True


def _rel(path: str, what: str) -> str:
    if Path(path).is_absolute():
        raise PromptComparisonError(f"{what} is an absolute path ({path}); the comparison reads it at the "
                                    "experiment's commit, so it must be relative to the repository")
    return Path(path).as_posix()


def run_prompt_comparison(cfg: Any, experiment: str = DEFAULT_EXPERIMENT, repo_dir: str | Path = ".") -> Path:
    """Collect the workspace arm and the experiment ``experiment`` into ``<reports>/prompt_comparison.json``
    (relative paths of ``cfg`` are taken from ``repo_dir``, the repository root); returns its path."""
    from dvc.fs import DVCFileSystem

    repo = Path(repo_dir).resolve()
    reports = _rel(cfg.paths.reports, "paths.reports")
    detector = f"{_rel(cfg.paths.models, 'paths.models')}/{DETECTOR}"
    rev, baseline = find_experiment(repo, experiment)
    fs = DVCFileSystem(repo=str(repo), rev=rev)

    def at_rev(path: str) -> bytes:
        try:
            return fs.read_bytes(path)
        except FileNotFoundError as e:
            raise PromptComparisonError(f"{path} does not exist at experiment {experiment!r} ({rev[:12]}), "
                                        "in git or in the DVC cache") from e

    exp_raw = yaml.safe_load(at_rev("params.yaml")) or {}
    exp_cfg = config_from_dict(exp_raw, source=f"params.yaml at {experiment}")
    if exp_cfg.profile != cfg.profile:
        raise PromptComparisonError(f"experiment {experiment!r} ran profile {exp_cfg.profile!r}, the workspace "
                                    f"{cfg.profile!r}")
    diff = param_differences(cfg.to_dict(), exp_cfg.to_dict())
    if set(diff) != {CHANGED_PARAM}:
        raise PromptComparisonError(
            f"experiment {experiment!r} must differ from the workspace in {CHANGED_PARAM} only, so that the "
            f"recipe is the same; effective parameters that differ: {diff}")

    ws_prompt = _rel(cfg.model.prompt_file, "model.prompt_file")
    ws_metrics_path = repo / reports / "metrics.json"
    if not ws_metrics_path.is_file():
        raise PromptComparisonError(f"{ws_metrics_path} not found: run `dvc repro evaluate` first")
    ws_card = repo / detector / CARD_FILE
    if not ws_card.is_file():
        raise PromptComparisonError(f"{ws_card} not found: `dvc checkout` (or `dvc repro evaluate`) first")
    ours = arm_record(
        "ours", ws_prompt, load_prompt(repo / ws_prompt).sha256,
        read_json(ws_metrics_path.read_bytes(), str(ws_metrics_path)), f"workspace {reports}/metrics.json",
        read_json(ws_card.read_bytes(), str(ws_card)))

    exp_prompt = _rel(exp_cfg.model.prompt_file, "the experiment's model.prompt_file")
    study = arm_record(
        "study", exp_prompt, Prompt(instruction=at_rev(exp_prompt).decode("utf-8")).sha256,
        read_json(at_rev(f"{reports}/metrics.json"), f"{reports}/metrics.json at {experiment}"),
        f"{reports}/metrics.json at experiment {experiment} ({rev[:12]})",
        read_json(at_rev(f"{detector}/{CARD_FILE}"), f"{detector}/{CARD_FILE} at {experiment}"))

    changed = git(repo, "diff", "--name-only", baseline, rev).splitlines()
    record = build_comparison(ours, study, profile=cfg.profile, experiment={
        "name": experiment, "rev": rev, "baseline_commit": baseline,
        "params_changed": {CHANGED_PARAM: diff[CHANGED_PARAM]},
        # besides params.yaml, dvc.lock and what the stages wrote: uncommitted changes the run included
        "uncommitted_changes_included": sorted(f for f in changed if f not in ("params.yaml", "dvc.lock")
                                               and not f.startswith(f"{reports}/")),
    })
    out = repo / reports / COMPARISON_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


# ------------------------------------------------------------------------------- reading it back


def load_comparison(path: str | Path) -> dict[str, Any]:
    """``prompt_comparison.json`` as written here, or the committed placeholder (status ``not run``); a
    reports folder without the file (a run with ``paths.reports`` elsewhere) reads as not run. An error
    naming the file when it is malformed."""
    p = Path(path)
    if not p.is_file():
        return {**NOT_RUN, "how": f"no {p.name} beside this table; {NOT_RUN['how']}"}
    data = read_json(p.read_bytes(), str(p))
    status = data.get("status")
    if status == "not run":
        return data
    if status != "measured":
        raise PromptComparisonError(f"{p}: status must be 'measured' or 'not run', got {status!r}")
    need = {"command", "profile", "experiment", "arms", "eval_data_sha256"}
    arms = data.get("arms")
    names = sorted(a.get("arm") for a in arms if isinstance(a, dict)) if isinstance(arms, list) else None
    if not need <= set(data) or names != ["ours", "study"] or len(arms) != 2:
        raise PromptComparisonError(f"{p}: a measured comparison has {sorted(need)} and two arms, 'ours' and "
                                    "'study'")
    for i, arm in enumerate(data["arms"]):
        lacks = [k for k in ("arm", "prompt_file", "prompt_sha256", "detector_sha256", *SETS) if k not in arm]
        lacks += [f"{s}.{k}" for s in SETS if s in arm for k in ("default", "tuned") if k not in arm[s]]
        if lacks:
            raise PromptComparisonError(f"{p}: arms[{i}] lacks {', '.join(lacks)}")
    return data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tasks.prompt_comparison", description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="run the DVC experiment first (make prompt-comparison)")
    ap.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="the DVC experiment's name")
    ap.add_argument("--study-prompt", default=STUDY_PROMPT, help="the other arm's model.prompt_file")
    ap.add_argument("--params", default="params.yaml", help="the workspace's parameter file")
    args = ap.parse_args(argv)
    cfg = load_config(args.params)
    repo = Path(args.params).resolve().parent
    try:
        if args.run:
            run_experiment(cfg, args.experiment, args.study_prompt, repo)
        out = run_prompt_comparison(cfg, args.experiment, repo)
    except PromptComparisonError as e:
        raise SystemExit(f"prompt comparison: {e}") from None
    print(f"wrote {out}; `dvc repro table1` puts it in Table 1")


if __name__ == "__main__":
    main()
