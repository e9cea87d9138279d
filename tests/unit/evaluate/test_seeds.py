"""`make seeds`: the summary arithmetic on known numbers, and end to end on a toy git + DVC repository
whose `table1` stage "trains" two detectors whose figures depend on `train.seed` (seconds, no model)."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap

import pytest
import yaml
from _eval_fixtures import REPO, commit_pipeline

from chintox.config import config_from_dict, load_config
from chintox.dvc_lock import dvc_md5
from tasks.experiments import lock_outs, run_experiment_command
from tasks.seeds import (
    SeedsError,
    collect,
    compare,
    experiment_command,
    load_seeds,
    run_experiments,
    summarise,
)
from tasks.table1 import curve_lines, pretrain_curve, seeds_lines, write_curve_plot


def _arm(seed: int, s2: float, s12: float) -> dict:
    def row(acc):
        block = {"accuracy": acc, "f1": acc, "auc": acc}
        return {"toxicn_test": block, "cold_test": block, "toxicn_val": block}
    return {"seed": seed, "source": "x", "rows": {"stage2": row(s2), "table1_arm/stage2": row(s12)}}


def test_summary_and_the_spread_rule():
    s = summarise([0.70, 0.72, 0.74])
    assert s["mean"] == pytest.approx(0.72) and s["std"] == pytest.approx(0.02)
    assert (s["min"], s["max"], s["n"]) == (0.70, 0.74, 3)
    # stage 1+2 better on every seed by 2-4 points: larger than the spread
    better = compare([_arm(1, 0.70, 0.73), _arm(2, 0.72, 0.74), _arm(3, 0.71, 0.75)])
    d = better["difference"]["toxicn_test.accuracy"]
    assert d["per_seed"] == pytest.approx([0.03, 0.02, 0.04]) and d["beyond_spread"] is True
    # signs disagree: within the spread, whatever the mean
    mixed = compare([_arm(1, 0.70, 0.76), _arm(2, 0.72, 0.71), _arm(3, 0.71, 0.75)])
    assert mixed["difference"]["toxicn_test.accuracy"]["beyond_spread"] is False
    # same sign but the mean is within one standard deviation of the differences
    wide = compare([_arm(1, 0.70, 0.701), _arm(2, 0.70, 0.75), _arm(3, 0.70, 0.702)])
    assert wide["difference"]["toxicn_test.accuracy"]["beyond_spread"] is False


FAKE = '''
"""The toy pipeline's `table1`: "trains" the stage 1+2 detector (figures from train.seed) and writes
Table 1 with both detectors."""
import json
from pathlib import Path
from chintox.config import load_config

cfg = load_config("params.yaml")
s = cfg.train_seed
s2 = json.loads(Path("models/stage2/detector.json").read_text())["val_metrics"]["accuracy"]
s12 = 0.73 + 0.01 * (s % 3)
Path("models/table1_arm/stage2").mkdir(parents=True, exist_ok=True)
Path("models/table1_arm/stage2/detector.json").write_text(json.dumps(
    {"val_metrics": {"accuracy": s12, "f1": s12, "auc": s12}, "config_hash": f"h{s}"}))
block = lambda a: {"accuracy": a, "f1": a, "auc": a}
Path("reports").mkdir(exist_ok=True)
Path("reports/table1.json").write_text(json.dumps({"measured": [
    {"model": "Stage 2 only (ToxiCN)", "backend": "hf", "toxicn": block(s2), "cold": block(s2 - 0.1)},
    {"model": "Stage 1+2 (COIG-CQIA & ToxiCN)", "backend": "hf", "toxicn": block(s12), "cold": block(s12 - 0.1)}]}))
'''

STAGE2 = '''
"""The toy pipeline's `stage2`: "trains" the stage-2 detector from train.seed, on a pre-trained base
or not (0.02 + 0.005 * (seed % 2) lower without; 0.004 higher after 1600 steps), with our prompt or the
study's (0.01 lower)."""
import json
from pathlib import Path
from chintox.config import load_config

cfg = load_config("params.yaml")
s = cfg.train_seed
pretrained = "pretrain 0" not in Path("models/base/content.txt").read_text()
s2 = 0.70 + 0.01 * (s % 3) - (0 if pretrained else 0.02 + 0.005 * (s % 2))
s2 -= 0.01 if "gao_study" in cfg.model.prompt_file else 0
s2 += 0.004 if "pretrain 1600" in Path("models/base/content.txt").read_text() else 0
Path("models/stage2").mkdir(parents=True, exist_ok=True)
Path("models/stage2/detector.json").write_text(json.dumps({"val_metrics": {"accuracy": s2, "f1": s2, "auc": s2},
                                                           "config_hash": f"h{s}"}))
'''

EVALUATE = '''
"""The toy pipeline's `evaluate`: the stage-2 detector's test figures at 0.5 (``default``)."""
import json
from pathlib import Path

a = json.loads(Path("models/stage2/detector.json").read_text())["val_metrics"]["accuracy"]
block = lambda a: {"accuracy": a, "f1": a, "auc": a}
Path("reports").mkdir(exist_ok=True)
Path("reports/metrics.json").write_text(json.dumps({"toxicn_test": {"default": block(a)},
                                                    "cold_test": {"default": block(a - 0.1)}}))
'''

PREP = '''
"""The toy pipeline's upstream: the splits and the base the detectors train on, from inputs.txt; the
base records model.tiny.pretrain_steps (0: not pre-trained) and, in its build record only, the prompt
(as the real base's build_info.json notes the prompt's token count)."""
from pathlib import Path
from chintox.config import load_config

cfg = load_config("params.yaml")
steps = cfg.model.tiny.pretrain_steps
Path("data/splits").mkdir(parents=True, exist_ok=True)
Path("data/splits/content.txt").write_text(Path("inputs.txt").read_text())
Path("models/base").mkdir(parents=True, exist_ok=True)
Path("models/base/content.txt").write_text(Path("inputs.txt").read_text() + f"pretrain {steps}")
Path("models/base/build_info.json").write_text(f'{{"prompt": "{cfg.model.prompt_file}"}}')
'''


def _make_toy(root) -> tuple:
    """A git + DVC repository with the real params.yaml and the real stages' shape: ``prep`` (the splits
    and the base, from inputs.txt and model.tiny; no training seed), ``stage2`` (from train.seed),
    ``evaluate`` and ``table1`` (the stage 1+2 detector "trained" from train.seed), run and committed."""
    repo = root / "repo"
    repo.mkdir()
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    for name, text in (("fake.py", FAKE), ("prep.py", PREP), ("stage2.py", STAGE2), ("evaluate.py", EVALUATE)):
        (repo / name).write_text(text)
    (repo / "inputs.txt").write_text("splits v1\n")
    py = sys.executable
    (repo / "dvc.yaml").write_text(textwrap.dedent(f"""\
        stages:
          prep:
            cmd: {py} prep.py
            deps:
              - prep.py
              - inputs.txt
            params:
              - model.tiny
              - profiles.${{profile}}.model.tiny
              - model.prompt_file
              - profiles.${{profile}}.model.prompt_file
            outs:
              - data/splits
              - models/base
          stage2:
            cmd: {py} stage2.py
            deps:
              - stage2.py
              - data/splits
              - models/base
            params:
              - train.seed
              - profiles.${{profile}}.train.seed
              - model.prompt_file
              - profiles.${{profile}}.model.prompt_file
            outs:
              - models/stage2
          evaluate:
            cmd: {py} evaluate.py
            deps:
              - evaluate.py
              - models/stage2
            outs:
              - reports/metrics.json:
                  cache: false
          table1:
            cmd: {py} fake.py
            deps:
              - fake.py
              - data/splits
              - models/base
              - models/stage2
            params:
              - train.seed
              - profiles.${{profile}}.train.seed
            outs:
              - models/table1_arm
              - reports/table1.json:
                  cache: false
        """))
    commit_pipeline(repo)
    return repo, load_config(repo / "params.yaml")


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory):
    repo, cfg = _make_toy(tmp_path_factory.mktemp("seeds"))
    assert cfg.train.compare_seeds == [42, 1, 2] and cfg.train_seed == 42
    assert run_experiments(cfg, repo) == [1, 2, *((s, v) for v in ("no-pretrain", "study-prompt", "pretrain-1600",
                                                                   "pretrain-3200")
                                                 for s in (42, 1, 2))]
    return repo, cfg


def test_each_seed_is_an_experiment_and_the_record_summarises_them(toy_repo):
    repo, cfg = toy_repo
    out = collect(cfg, repo)
    rec = load_seeds(out)
    assert [a["seed"] for a in rec["seeds"]] == [42, 1, 2]
    assert rec["seeds"][0]["source"] == "workspace" and rec["seeds"][1]["source"].startswith("experiment seed-1")
    # figures read from each experiment's own commit: 42 % 3 = 0, 1, 2 -> 0.70, 0.71, 0.72
    acc = rec["rows"]["stage2"]["toxicn_test.accuracy"]
    assert acc["mean"] == pytest.approx(0.71) and acc["std"] == pytest.approx(0.01)
    assert rec["rows"]["table1_arm/stage2"]["cold_test.accuracy"]["mean"] == pytest.approx(0.64)
    d = rec["difference"]["toxicn_val.f1"]
    assert d["per_seed"] == pytest.approx([0.03, 0.03, 0.03]) and d["beyond_spread"] is True
    # the workspace kept its own results; a second run collects, it does not train again
    assert json.loads((repo / "reports/table1.json").read_text())["measured"][0]["toxicn"]["accuracy"] == 0.70
    assert run_experiments(cfg, repo) == []
    md = "\n".join(seeds_lines(rec, dict.fromkeys(("stage2", "table1_arm/stage2"), "h42")))
    assert "Stage 1+2 minus stage 2 only | 3.00 ± 0.00 (3.00–3.00) **larger than the spread**" in md
    assert "Stale" not in md
    # pre-trained against not: one experiment per seed, the workspace's included, paired by seed
    v = rec["variants"]["no-pretrain"]
    assert [a["seed"] for a in v["seeds"]] == [42, 1, 2] and v["set"] == {"model.tiny.pretrain_steps": 0}
    assert all(a["base_md5"] != rec["inputs_md5"]["models/base"] for a in v["seeds"])
    assert v["row"]["toxicn_test.accuracy"]["mean"] == pytest.approx(0.71 - 0.02 - 0.005 / 3)
    d = v["difference"]["toxicn_test.accuracy"]  # 42 % 2 = 0, 1, 0 -> 0.02, 0.025, 0.02
    assert d["per_seed"] == pytest.approx([0.02, 0.025, 0.02]) and d["beyond_spread"] is True
    assert v["difference"]["cold_test.f1"]["per_seed"] == pytest.approx([0.02, 0.025, 0.02])
    assert "| Stage 2 only: pre-trained base minus not | 2.17 ± 0.29 (2.00–2.50) **larger than the spread**" in md
    assert "`seed-<s>-no-pretrain`" in md and "`model.tiny.pretrain_steps` = 0" in md
    # the study's prompt: the base rebuilt (the prompt is one of its inputs) into the same weights
    p = rec["variants"]["study-prompt"]
    assert [a["seed"] for a in p["seeds"]] == [42, 1, 2] and p["collected_at"] == rec["commit"]
    assert all(a["base_md5"] != rec["inputs_md5"]["models/base"] for a in p["seeds"])
    d = p["difference"]["toxicn_test.accuracy"]
    assert d["per_seed"] == pytest.approx([0.01, 0.01, 0.01]) and d["beyond_spread"] is True
    assert "| Stage 2 only: our prompt minus the study's | 1.00 ± 0.00 (1.00–1.00) **larger than the spread**" in md
    assert "checked to be the workspace's byte for byte but for its build record" in md
    partial = {**rec, "variants": {"no-pretrain": rec["variants"]["no-pretrain"]}}  # a record from before it
    assert ("Stage 2 only, the study's prompt: not in this record; `make seeds ONLY=study-prompt` runs it"
            in "\n".join(seeds_lines(partial, dict.fromkeys(("stage2", "table1_arm/stage2"), "h42"))))
    # the section is stale when the workspace's splits or base are not those the record was measured on,
    # as DVC hashes them: the toy workspace's are (dvc_md5 reads what dvc.lock records), another base is not
    h42 = dict.fromkeys(("stage2", "table1_arm/stage2"), "h42")
    here = {u: dvc_md5(repo / u) for u in ("data/splits", "models/base")}
    assert here == rec["inputs_md5"] == {u: lock_outs(repo, rec["commit"])[u] for u in here}
    assert "Stale" not in "\n".join(seeds_lines(rec, h42, here))
    assert "Stale" not in "\n".join(seeds_lines(rec, h42, {**here, "models/base": None}))  # not there: untold
    moved = "\n".join(seeds_lines(rec, h42, {**here, "models/base": "0123.dir"}))
    assert f"**Stale**: measured on other inputs than this table's (DVC md5, record vs this workspace: " \
           f"models/base {here['models/base']} vs 0123.dir)" in moved
    # either detector trained with another configuration than the workspace's makes the section stale
    assert "Stale**: Stage 2 only" in "\n".join(seeds_lines(rec, {"stage2": "other", "table1_arm/stage2": "h42"}))
    assert "Stale**: Stage 1+2" in "\n".join(seeds_lines(rec, {"stage2": "h42", "table1_arm/stage2": "other"}))


def test_an_experiment_that_differs_in_more_than_the_seed_is_refused(toy_repo):
    repo, _ = toy_repo
    raw = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    raw["train"]["stage2"]["lora_r"] = 8  # not one the tiny profile sets
    with pytest.raises(SeedsError, match=r"train.seed \(= 1\) only; .* differ: .*'train.stage2.lora_r'"):
        collect(config_from_dict(raw), repo)


def test_a_workspace_that_is_not_heads_dvc_lock_is_refused_before_any_experiment(toy_repo):
    """The seeds' experiments are of HEAD and the record names HEAD's splits and base: a workspace rebuilt
    into other outputs and not committed (another machine's base, say) is not what they pair with."""
    repo, cfg = toy_repo
    lock = repo / "dvc.lock"
    committed = lock.read_text()
    lock.write_text(committed.replace("stages:", "stages:  # rebuilt elsewhere", 1))
    try:
        for call in (lambda: run_experiments(cfg, repo, ["study-prompt"]), lambda: run_experiments(cfg, repo),
                     lambda: collect(cfg, repo)):
            with pytest.raises(SeedsError, match="dvc.lock has changes that are not committed"):
                call()
    finally:
        lock.write_text(committed)
    assert run_experiments(cfg, repo) == []  # committed again: every experiment of HEAD exists


def test_fewer_than_three_seeds_make_no_claim(toy_repo):
    repo, _ = toy_repo
    raw = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    raw["train"]["compare_seeds"] = [42, 1]
    with pytest.raises(SeedsError, match="at least 3"):
        collect(config_from_dict(raw), repo)
    raw["train"]["compare_seeds"] = [42, 1, 1, 2]  # seed 1 counted twice would shrink the spread
    with pytest.raises(SeedsError, match="names a seed twice"):
        collect(config_from_dict(raw), repo)


@pytest.mark.parametrize(("edit", "refusal"), [
    ("inputs.txt", r"trained on other inputs than the workspace .*data/splits.*models/base"),
    ("fake.py", r"changed more than parameters and results: \['fake.py'\]"),
])
def test_an_experiment_run_from_an_unclean_workspace_is_refused(tmp_path, edit, refusal):
    """`dvc exp run --temp` takes uncommitted changes along: an experiment that trained on other splits
    and base, or ran other code, is not a draw of the same pipeline with another seed."""
    repo, cfg = _make_toy(tmp_path)
    original = (repo / edit).read_text()
    (repo / edit).write_text(original + "\n# changed\n")
    run_experiment_command(cfg, repo, experiment_command(1))
    (repo / edit).write_text(original)  # the workspace is clean and up to date again
    with pytest.raises(SeedsError, match=refusal):
        collect(cfg, repo)


def test_a_variant_experiment_that_is_not_the_variant_is_refused(tmp_path, monkeypatch):
    """An experiment under a variant's name that did not set the variant's parameters, or a variant
    whose parameters left the base it is meant to rebuild as it was, measures nothing of the variant."""
    from tasks import seeds as seeds_mod

    repo, cfg = _make_toy(tmp_path)
    head = seeds_mod.git(repo, "rev-parse", "HEAD")
    ws_lock, upstream = seeds_mod.lock_outs(repo, head), ["data/splits", "models/base"]
    good = experiment_command(1, "no-pretrain")
    i = good.index("model.tiny.pretrain_steps=0")
    wrong = good[:i - 1] + good[i + 1:]  # without that -S: named seed-1-no-pretrain, but the seed alone changed
    assert wrong[-3:] == ["-S", "train.seed=1", "evaluate"]
    run_experiment_command(cfg, repo, wrong)
    with pytest.raises(SeedsError, match=r"seed-1-no-pretrain' must differ .* model.tiny.pretrain_steps \(= 0\) only"):
        seeds_mod._checked_experiment(cfg, repo, 1, "no-pretrain", ws_lock, upstream)
    monkeypatch.setitem(seeds_mod.VARIANTS, "rank-8", {"label": "r8", "set": {"train.stage2.lora_r": 8},
                                                       "base": "rebuilt", "difference": "d"})
    run_experiment_command(cfg, repo, experiment_command(2, "rank-8"))
    with pytest.raises(SeedsError, match=r"meant to rebuild \['models/base'\].* changed nothing there"):
        seeds_mod._checked_experiment(cfg, repo, 2, "rank-8", ws_lock, upstream)


def test_a_variant_that_keeps_the_base_weights_is_refused_when_the_base_came_out_different(tmp_path, monkeypatch):
    """A variant whose parameter rebuilds the base only to record itself (the study's prompt) measures
    its parameter only if the rebuilt base is the workspace's; one whose base came out otherwise would
    measure the base."""
    from tasks import seeds as seeds_mod

    repo, cfg = _make_toy(tmp_path)
    head = seeds_mod.git(repo, "rev-parse", "HEAD")
    ws_lock, upstream = seeds_mod.lock_outs(repo, head), ["data/splits", "models/base"]
    monkeypatch.setitem(seeds_mod.VARIANTS, "steps-5", {"label": "s5", "set": {"model.tiny.pretrain_steps": 5},
                                                        "base": "same weights", "difference": "d"})
    run_experiment_command(cfg, repo, experiment_command(1, "steps-5"))
    with pytest.raises(SeedsError, match=r"rebuilt models/base into another base .*\['content.txt'\]"):
        seeds_mod._checked_experiment(cfg, repo, 1, "steps-5", ws_lock, upstream)
    monkeypatch.setitem(seeds_mod.VARIANTS["steps-5"], "base", "kept")
    with pytest.raises(SeedsError, match="base rule 'kept' is not one of"):
        seeds_mod._checked_experiment(cfg, repo, 1, "steps-5", ws_lock, upstream)


def test_only_one_variant_keeps_the_rest_of_a_record_that_still_describes_the_workspace(toy_repo):
    repo, cfg = toy_repo
    full = load_seeds(collect(cfg, repo))
    assert run_experiments(cfg, repo, ["study-prompt"]) == []  # its experiments of HEAD exist
    again = load_seeds(collect(cfg, repo, ["study-prompt"]))
    assert again == full
    path = repo / "reports" / "seeds.json"
    for field, value, refusal in (
            ("inputs_md5", {"data/splits": "x", "models/base": "y"}, r"inputs \{'data/splits': 'x'"),
            ("profile", "paper", "profile 'paper', not 'tiny'"),
            ("seeds", full["seeds"][:2], r"seeds \[42, 1\], not train.compare_seeds \[42, 1, 2\]")):
        path.write_text(json.dumps({**full, field: value}))
        with pytest.raises(SeedsError, match=rf"seeds.json no longer describes this workspace \({refusal}.*in full"):
            collect(cfg, repo, ["study-prompt"])
        # and before any experiment runs, not after them (a variant is hours of them on 2 cores)
        with pytest.raises(SeedsError, match=rf"^--only study-prompt: .*seeds.json no longer describes .*{refusal}"):
            run_experiments(cfg, repo, ["study-prompt"])
    ws = {**full["seeds"][0], "rows": {**full["seeds"][0]["rows"],
                                        "stage2": {**full["seeds"][0]["rows"]["stage2"], "config_hash": "old"}}}
    path.write_text(json.dumps({**full, "seeds": [ws, *full["seeds"][1:]]}))
    with pytest.raises(SeedsError, match=r"Stage 2 only \(ToxiCN\) trained with configuration old, this workspace's"):
        collect(cfg, repo, ["study-prompt"])
    path.write_text(json.dumps({"status": "not run", "how": "x"}))
    with pytest.raises(SeedsError, match="is not one: run `make seeds` in full"):
        collect(cfg, repo, ["study-prompt"])
    with pytest.raises(SeedsError, match="the variants are no-pretrain, study-prompt, pretrain-1600, pretrain-3200"):
        collect(cfg, repo, ["rank-8"])
    collect(cfg, repo)  # the full record again, for the other tests


def test_the_pretraining_curve_is_the_workspace_arm_and_the_variants_that_change_the_steps_alone(toy_repo, tmp_path):
    repo, cfg = toy_repo
    rec = load_seeds(collect(cfg, repo))
    base = {"kind": "tiny", "pretrain_steps": 800, "pretrain_tokens": 3_276_800}
    points = pretrain_curve(rec, base)
    # study-prompt changes the prompt, not the steps: not a point of the curve
    assert [(p["arm"], p["steps"], p["tokens"]) for p in points] == [
        ("no-pretrain", 0, 0), ("workspace", 800, 3_276_800), ("pretrain-1600", 1600, 6_553_600),
        ("pretrain-3200", 3200, 13_107_200)]
    acc = [p["figures"]["toxicn_test.accuracy"]["mean"] for p in points]
    assert acc == pytest.approx([0.71 - 0.02 - 0.005 / 3, 0.71, 0.714, 0.71])
    assert points[2]["figures"]["toxicn_val.f1"]["std"] == pytest.approx(0.01)
    assert rec["variants"]["pretrain-1600"]["difference"]["toxicn_val.accuracy"]["per_seed"] == pytest.approx(
        [-0.004] * 3)
    ref = {"toxicn": {"accuracy": 0.7503, "f1": 0.7737}, "cold": {"accuracy": 0.6519}}
    md = "\n".join(curve_lines(points, ref))
    assert "| 1,600 | 6.6M | pretrain-1600 | 71.40 ± 1.00 (70.40–72.40) |" in md
    assert "| 0 | 0.0M | no-pretrain | " in md and md.index("| 0 |") < md.index("| 800 |") < md.index("| 1,600 |") < md.index("| 3,200 |")
    assert "TF-IDF on the same split, ToxiCN test: Acc 75.03, F1 77.37; COLD Acc 65.19." in md
    png = write_curve_plot(points, ref, tmp_path / "plots" / "curve.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a workspace base not pre-trained gives no tokens per step: the other steps' tokens are unknown
    unknown = pretrain_curve(rec, {"kind": "tiny", "pretrain_steps": 0, "pretrain_tokens": 0})
    assert [p["tokens"] for p in unknown if p["steps"] == 1600] == [None]
    assert "| 1,600 | ? | pretrain-1600 |" in "\n".join(curve_lines(unknown, None))
    # no curve: a base that is not the tiny one, a record not measured, a single point
    assert pretrain_curve(rec, {"kind": "rehearsal"}) == [] and pretrain_curve({"status": "not run"}, base) == []
    assert pretrain_curve({**rec, "variants": {}}, base) == [] and curve_lines([], ref) == []
    assert write_curve_plot(points[:1], ref, tmp_path / "one.png") is None and not (tmp_path / "one.png").exists()


def test_table1_hashes_this_workspaces_splits_and_base_against_the_record(toy_repo, monkeypatch):
    """Table 1 (render_table1, as the table1 stage runs it from the repository root) reads the splits and
    base of its own configuration: the record's, until the base on disk is another."""
    from tasks.table1 import render_table1

    repo, cfg = toy_repo
    rec = load_seeds(collect(cfg, repo))
    monkeypatch.chdir(repo)
    monkeypatch.setattr("tasks.table1._config_hash", lambda _: "h42")  # the toy's cards are not full cards
    assert "measured on other inputs" not in render_table1([], cfg, [], None, rec)
    base = repo / "models" / "base" / "content.txt"
    kept = base.read_text()
    try:
        base.write_text(kept + "rebuilt elsewhere")
        assert "measured on other inputs than this table's (DVC md5, record vs this workspace: models/base " \
               in render_table1([], cfg, [], None, rec)
    finally:
        base.write_text(kept)


def test_the_committed_record_and_the_placeholder_read(tmp_path):
    committed = load_seeds(REPO / "reports" / "seeds.json")  # make seeds has run: a measured record
    assert committed["status"] == "measured" and len(committed["seeds"]) >= 3
    assert "Not run yet" in "\n".join(seeds_lines(load_seeds(tmp_path / "seeds.json"), {}))
    (tmp_path / "seeds.json").write_text('{"status": "measured"}')
    with pytest.raises(SeedsError, match="seeds.json"):
        load_seeds(tmp_path / "seeds.json")


def test_folders_beside_the_repository_are_visible_from_a_temporary_experiment(tmp_path):
    from tasks.experiments import mirror_sibling_folders

    (tmp_path / "shared" / "study").mkdir(parents=True)
    repo = tmp_path / "repo"
    repo.mkdir()
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["data"]["raw_dir"], raw["data"]["study_dir"] = "../shared/datasets", "../shared/study"
    made = mirror_sibling_folders(config_from_dict(raw), repo)
    link = repo / ".dvc" / "tmp" / "exps" / "standalone" / "shared"
    assert made == [link] and link.resolve() == (tmp_path / "shared").resolve()
    # what a temporary copy at standalone/<tmp> reads as ../shared/study is the workspace's ../shared/study
    assert (link.parent / "tmpcopy" / ".." / "shared" / "study").resolve() == (tmp_path / "shared" / "study").resolve()
    assert mirror_sibling_folders(config_from_dict(raw), repo) == []  # idempotent
    link.unlink()
    link.symlink_to(tmp_path / "moved-away", target_is_directory=True)  # dangling: a checkout that lay elsewhere
    assert mirror_sibling_folders(config_from_dict(raw), repo) == [link]
    assert link.resolve() == (tmp_path / "shared").resolve()
