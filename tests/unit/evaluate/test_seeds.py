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
from tasks.seeds import SeedsError, collect, compare, load_seeds, run_experiments, summarise
from tasks.table1 import seeds_lines


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
"""The toy pipeline: `table1` "trains" both detectors (figures from train.seed) and writes Table 1."""
import json
from pathlib import Path
from chintox.config import load_config

cfg = load_config("params.yaml")
s = cfg.train_seed
s2, s12 = 0.70 + 0.01 * (s % 3), 0.73 + 0.01 * (s % 3)
for d, acc in (("models/stage2", s2), ("models/table1_arm/stage2", s12)):
    Path(d).mkdir(parents=True, exist_ok=True)
    Path(d, "detector.json").write_text(json.dumps({"val_metrics": {"accuracy": acc, "f1": acc, "auc": acc},
                                                    "config_hash": f"h{s}"}))
block = lambda a: {"accuracy": a, "f1": a, "auc": a}
Path("reports").mkdir(exist_ok=True)
Path("reports/table1.json").write_text(json.dumps({"measured": [
    {"model": "Stage 2 only (ToxiCN)", "backend": "hf", "toxicn": block(s2), "cold": block(s2 - 0.1)},
    {"model": "Stage 1+2 (COIG-CQIA & ToxiCN)", "backend": "hf", "toxicn": block(s12), "cold": block(s12 - 0.1)}]}))
Path("reports/metrics.json").write_text(json.dumps({"eval_data_sha256": {"toxicn_test": "e"}}))
'''


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("seeds") / "repo"
    repo.mkdir()
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    (repo / "fake.py").write_text(FAKE)
    py = sys.executable
    (repo / "dvc.yaml").write_text(textwrap.dedent(f"""\
        stages:
          table1:
            cmd: {py} fake.py
            deps:
              - fake.py
            params:
              - train.seed
              - profiles.${{profile}}.train.seed
            outs:
              - models
              - reports/table1.json:
                  cache: false
              - reports/metrics.json:
                  cache: false
        """))
    commit_pipeline(repo)
    cfg = load_config(repo / "params.yaml")
    assert cfg.train.compare_seeds == [42, 1, 2] and cfg.train_seed == 42
    assert run_experiments(cfg, repo) == [1, 2]
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
    md = "\n".join(seeds_lines(rec, "h42"))
    assert "Stage 1+2 minus stage 2 only | 3.00 ± 0.00 (3.00–3.00) **larger than the spread**" in md
    assert "Stale" not in md and "Stale" in "\n".join(seeds_lines(rec, "other"))


def test_an_experiment_that_differs_in_more_than_the_seed_is_refused(toy_repo):
    repo, _ = toy_repo
    raw = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    raw["train"]["stage2"]["lr"] = 0.5
    with pytest.raises(SeedsError, match=r"train.seed only .* differ: .*'train.stage2.lr'"):
        collect(config_from_dict(raw), repo)


def test_fewer_than_three_seeds_make_no_claim(toy_repo):
    repo, _ = toy_repo
    raw = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    raw["train"]["compare_seeds"] = [42, 1]
    with pytest.raises(SeedsError, match="at least 3"):
        collect(config_from_dict(raw), repo)


def test_the_placeholder_reads_as_not_run(tmp_path):
    assert load_seeds(REPO / "reports" / "seeds.json")["status"] in {"not run", "measured"}  # the committed one reads
    assert "Not run yet" in "\n".join(seeds_lines(load_seeds(tmp_path / "seeds.json"), None))
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
