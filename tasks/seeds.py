"""Table 1's comparisons over training seeds: `make seeds`, so that a claim survives the noise.

On the tiny profile one training run is one draw: the same commit trained on another machine moved
ToxiCN test accuracy by tenths of a point and COLD test by more than a point. So Table 1's comparison of
its two detectors (stage 1 + 2 against stage 2 only, the ``stage2`` and ``table1_arm`` stages) is run
over the seeds in ``train.compare_seeds`` and reported as mean, standard deviation and range, with the
paired difference per seed.

The seed ``train.seed`` names (``data.seed`` when null) is the workspace itself (``dvc repro``); each
other seed is a DVC experiment of the same pipeline with ``train.seed`` changed and nothing else
(:func:`experiment_command`)::

    dvc exp run --temp --allow-missing -n seed-<s> -S train.seed=<s> table1

The splits and the base are the workspace's (restored from DVC's run-cache, not rebuilt): only what
the training seed moves is measured.

Each variant of :data:`VARIANTS` is an experiment per seed, the workspace's seed included, of the
evaluate stage with the variant's parameters and ``train.seed`` set, so that its comparison is a claim
over seeds too: ``no-pretrain`` (the base not pre-trained), ``study-prompt`` (the study's prompt) and
``pretrain-1600`` and ``pretrain-3200`` (twice and four times the tiny profile's pre-training: with
``no-pretrain`` and the workspace, a curve of the detector against pre-training tokens)::

    dvc exp run --temp --allow-missing -n seed-<s>-no-pretrain -S train.seed=<s> -S model.tiny.pretrain_steps=0 evaluate

Its stage-2 detector is compared, seed by seed, with the workspace arm's of the same seed (same splits;
the base rebuilt for ``no-pretrain``, that is the point; for ``study-prompt`` the base is rebuilt too,
the prompt being one of its inputs, and must come out byte for byte the workspace's but for its build
record). ``--only VARIANT`` (``make seeds ONLY=study-prompt``) runs and reads that variant alone and keeps
the rest of the committed record, refused unless the record still describes this workspace. :func:`collect` reads each arm's ``reports/table1.json`` and both
detectors' cards (ToxiCN val figures: what a decision may use) at the experiment's commit, checks that
the experiment differs from the workspace in ``train.seed`` only (parameters, code: nothing but
parameters, ``dvc.lock`` and pipeline outputs changed) and trained on the same splits and base (their
``dvc.lock`` hashes), and writes ``<reports>/seeds.json``; Table 1 (:mod:`tasks.table1`) shows it. Nothing is tuned here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from chintox.card import CARD_FILE
from chintox.config import config_from_dict, load_config
from tasks.experiments import (
    ExperimentError,
    ExperimentNotFound,
    changed_beyond_results,
    find_experiment,
    git,
    lock_outs,
    param_differences,
    read_json,
    require_up_to_date,
    run_experiment_command,
)

SEEDS_FILE = "seeds.json"
COMMAND = "make seeds"
TARGET = "table1"
CHANGED_PARAM = "train.seed"
ROWS = {"stage2": "Stage 2 only (ToxiCN)", "table1_arm/stage2": "Stage 1+2 (COIG-CQIA & ToxiCN)"}
NOT_RUN = {"status": "not run", "how": f"`{COMMAND}`, then `dvc repro table1`"}
VARIANT_TARGET = "evaluate"  # a variant's experiment trains stage 2 on its own base and scores it
VARIANT_DETECTOR = "stage2"  # the detector a variant is compared on (under paths.models)


def pretrain_variant(steps: int) -> dict[str, Any]:
    """A variant that changes the tiny base's pre-training steps alone: a point of Table 1's curve of the
    detector against pre-training tokens (:func:`tasks.table1.pretrain_curve` reads it by its ``set``)."""
    return {
        "label": f"Stage 2 only, base pre-trained {steps:,} steps",
        "set": {"model.tiny.pretrain_steps": steps},
        "base": "rebuilt",
        "base_note": "the base rebuilt by that parameter",
        "difference": f"Stage 2 only: the workspace's pre-training minus {steps:,} steps",
    }


# What a variant does to the base (``models/base``): "same" (the default): the workspace's, by its
# dvc.lock md5; "rebuilt": must differ, or the variant measured nothing; "same weights": may be rebuilt
# (the parameter is one of the base stage's inputs) but every file of it other than its build record must
# be byte for byte the workspace's, so the variant measures its parameter and not a different base.
VARIANTS: dict[str, dict[str, Any]] = {
    "no-pretrain": {
        "label": "Stage 2 only, base not pre-trained",
        "set": {"model.tiny.pretrain_steps": 0},
        "base": "rebuilt",
        "base_note": "the base rebuilt by that parameter",
        "difference": "Stage 2 only: pre-trained base minus not",
    },
    "study-prompt": {
        "label": "Stage 2 only, the study's prompt",
        "set": {"model.prompt_file": "prompts/gao_study_zh.txt"},
        "base": "same weights",
        "base_note": ("the base rebuilt, since the prompt is one of its inputs, and checked to be the "
                      "workspace's byte for byte but for its build record"),
        "difference": "Stage 2 only: our prompt minus the study's",
    },
    # Points of the curve of detector figures against pre-training tokens (0: no-pretrain; the
    # workspace's 800 steps; these). 1,600: twice the tiny profile's, 6.6M tokens, ~19 min of base on
    # 2 cores. 3,200: doubling again (13.1M tokens, 1.6 passes over the corpus, ~40 min of base): over
    # seeds, 1,600 steps lifted ToxiCN val but not test, so whether test follows is read further out.
    **{f"pretrain-{steps}": pretrain_variant(steps) for steps in (1600, 3200)},
}
BASE_RULES = ("same", "rebuilt", "same weights")
BASE_RECORD = "build_info.json"  # the base's build record: it notes the prompt's token count
FIGURES = ("accuracy", "f1", "auc")


SeedsError = ExperimentError  # the multi-seed comparison cannot be run, collected or read


def experiment_name(seed: int, variant: str | None = None) -> str:
    return f"seed-{seed}" + (f"-{variant}" if variant else "")


def experiment_command(seed: int, variant: str | None = None) -> list[str]:
    sets = [f"{CHANGED_PARAM}={seed}"]
    if variant:
        sets += [f"{k}={json.dumps(v)}" for k, v in VARIANTS[variant]["set"].items()]
    return ["dvc", "exp", "run", "--temp", "--allow-missing", "-n", experiment_name(seed, variant),
            *[a for kv in sets for a in ("-S", kv)], VARIANT_TARGET if variant else TARGET]


def _find(repo: Path, seed: int, variant: str | None = None) -> tuple[str, str]:
    return find_experiment(repo, experiment_name(seed, variant), COMMAND)


def seeds_of(cfg: Any) -> list[int]:
    """``train.compare_seeds``, refused when it names a seed twice (one draw counted twice would shrink
    the spread) or gives fewer than 3 seeds with the workspace's."""
    seeds = list(cfg.train.compare_seeds)
    if len(set(seeds)) != len(seeds):
        raise SeedsError(f"train.compare_seeds {seeds} names a seed twice; each seed is one draw")
    if len(set(seeds) | {cfg.train_seed}) < 3:
        raise SeedsError(f"train.compare_seeds {seeds} with the workspace's seed {cfg.train_seed} "
                         "gives fewer than 3 seeds; a claim needs at least 3")
    return seeds


def variants_of(only: list[str] | None) -> list[str]:
    """The variants ``--only`` names (all of :data:`VARIANTS` when None), refused when one is unknown."""
    if only is None:
        return list(VARIANTS)
    unknown = [v for v in only if v not in VARIANTS]
    if unknown or not only:
        raise SeedsError(f"--only {' '.join(only) or '(nothing)'}: the variants are {', '.join(VARIANTS)}")
    return [v for v in VARIANTS if v in only]


def upstream_paths(cfg: Any) -> list[str]:
    """What every arm must share, as ``dvc.lock`` names them: the splits, then the base (``upstream[1]``)."""
    return [f"{Path(cfg.data.out_dir).as_posix()}/splits", f"{Path(cfg.paths.models).as_posix()}/base"]


def run_experiments(cfg: Any, repo: Path, only: list[str] | None = None) -> list[int]:
    """Run the experiment of each seed of ``train.compare_seeds`` but the workspace's and of each
    variant and seed, unless one of ``HEAD`` exists; returns those run. With ``only`` (variant names),
    those variants' experiments alone (:func:`collect` then keeps the rest of the committed record).
    Refuses to start when the workspace's Table 1 is stale."""
    require_up_to_date(repo, TARGET, f"run `dvc repro` first, it is the seed {cfg.train_seed} arm")
    # Refused now, not after hours of experiments, what collect would refuse: a workspace that is not
    # HEAD's dvc.lock, and for --only a committed record that no longer describes the workspace.
    ws_lock = _workspace_lock(repo, git(repo, "rev-parse", "HEAD"), upstream_paths(cfg))
    if only:
        _committed_record(cfg, repo, variants_of(only), ws_lock,
                          _cards(Path(cfg.paths.models), lambda p: (repo / p).read_bytes()))
    ran: list[int | tuple[int, str]] = []
    todo: list[tuple[int, str | None]] = [] if only else [(s, None) for s in seeds_of(cfg) if s != cfg.train_seed]
    todo += [(s, v) for v in variants_of(only) for s in seeds_of(cfg)]
    for seed, variant in todo:
        name = experiment_name(seed, variant)
        try:
            _find(repo, seed, variant)
            print(f"experiment {name!r} of HEAD exists (`dvc exp remove {name}` to run it again)", flush=True)
            continue
        except ExperimentNotFound:
            pass
        run_experiment_command(cfg, repo, experiment_command(seed, variant))
        ran.append((seed, variant) if variant else seed)
    return ran


def _arm(seed: int, table1: dict[str, Any], cards: dict[str, dict[str, Any]], source: str) -> dict[str, Any]:
    """One seed's figures: per detector row of Table 1 (first backend), test and COLD test at 0.5 and
    the ToxiCN val figures its card recorded."""
    out: dict[str, Any] = {"seed": seed, "source": source, "rows": {}}
    for key, label in ROWS.items():
        row = next((r for r in table1.get("measured", []) if r.get("model") == label and "toxicn" in r), None)
        if row is None:
            raise SeedsError(f"{source}: Table 1 has no measured row {label!r}")
        card = cards[key]
        out["rows"][key] = {
            "model": label, "backend": row["backend"],
            "toxicn_test": {k: row["toxicn"][k] for k in ("accuracy", "f1", "auc")},
            "cold_test": {k: row["cold"][k] for k in ("accuracy", "f1", "auc")},
            "toxicn_val": {k: card["val_metrics"][k] for k in ("accuracy", "f1", "auc")},
            "config_hash": card.get("config_hash"),
        }
    return out


def summarise(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def compare(arms: list[dict[str, Any]]) -> dict[str, Any]:
    """Per row and figure: mean, std, range over the seeds; per figure the paired difference
    (stage 1+2 minus stage 2 only) and whether it is larger than the spread: every seed's difference
    has the same sign and the mean difference exceeds its standard deviation."""
    summary: dict[str, Any] = {"rows": {}, "difference": {}}
    for key in ROWS:
        summary["rows"][key] = {
            f"{s}.{m}": summarise([a["rows"][key][s][m] for a in arms])
            for s in ("toxicn_val", "toxicn_test", "cold_test") for m in ("accuracy", "f1", "auc")}
    a_key, b_key = "table1_arm/stage2", "stage2"
    for fig in summary["rows"][b_key]:
        s, m = fig.split(".")
        summary["difference"][fig] = paired_difference([a["rows"][a_key][s][m] - a["rows"][b_key][s][m]
                                                        for a in arms])
    return summary


def paired_difference(diffs: list[float]) -> dict[str, Any]:
    """One figure's per-seed differences summarised, and whether the difference is larger than the
    spread: every seed's has the same sign and their mean exceeds their standard deviation."""
    d: dict[str, Any] = summarise(diffs)
    d["per_seed"] = diffs
    d["beyond_spread"] = bool(len(diffs) > 1 and (all(x > 0 for x in diffs) or all(x < 0 for x in diffs))
                              and abs(d["mean"]) > d["std"])
    return d


def _variant_row(metrics: dict[str, Any], card: dict[str, Any], source: str) -> dict[str, Any]:
    """A variant's stage-2 figures: ToxiCN test and COLD test at 0.5 (the evaluate step's ``default``)
    and the ToxiCN val figures its card recorded."""
    try:
        return {"toxicn_test": {k: metrics["toxicn_test"]["default"][k] for k in FIGURES},
                "cold_test": {k: metrics["cold_test"]["default"][k] for k in FIGURES},
                "toxicn_val": {k: card["val_metrics"][k] for k in FIGURES},
                "config_hash": card.get("config_hash")}
    except KeyError as e:
        raise SeedsError(f"{source}: no {e} in the evaluate step's metrics.json or the detector card") from e


def compare_variant(arms: list[dict[str, Any]], variant_arms: list[dict[str, Any]]) -> dict[str, Any]:
    """A variant over the seeds: its figures (mean, std, range) and, per figure, the workspace
    recipe's stage 2 minus the variant's, paired by seed."""
    by_seed = {a["seed"]: a["rows"][VARIANT_DETECTOR] for a in arms}
    missing = [v["seed"] for v in variant_arms if v["seed"] not in by_seed]
    if missing:
        raise SeedsError(f"variant seeds {missing} have no arm of the workspace's recipe to compare with")
    out: dict[str, Any] = {"row": {}, "difference": {}}
    for s in ("toxicn_val", "toxicn_test", "cold_test"):
        for m in FIGURES:
            out["row"][f"{s}.{m}"] = summarise([v["row"][s][m] for v in variant_arms])
            out["difference"][f"{s}.{m}"] = paired_difference(
                [by_seed[v["seed"]][s][m] - v["row"][s][m] for v in variant_arms])
    return out


def collect(cfg: Any, repo: Path, only: list[str] | None = None) -> Path:
    """Read the workspace arm, each seed's experiment and each variant's into ``<reports>/seeds.json``.

    With ``only`` (variant names) the committed record keeps everything but those variants, which are
    read from their experiments of ``HEAD``: allowed only while that record still describes this
    workspace (:func:`_reusable_record`)."""
    reports, models = Path(cfg.paths.reports), Path(cfg.paths.models)
    if reports.is_absolute() or models.is_absolute():
        raise SeedsError("paths.reports and paths.models must be relative to the repository")

    seeds = seeds_of(cfg)
    names = variants_of(only)
    require_up_to_date(repo, TARGET, f"run `dvc repro` first, it is the seed {cfg.train_seed} arm")
    head = git(repo, "rev-parse", "HEAD")
    upstream = upstream_paths(cfg)
    ws_lock = _workspace_lock(repo, head, upstream)
    out = repo / reports / SEEDS_FILE
    ws_cards = _cards(models, lambda p: (repo / p).read_bytes())
    if only:
        prior = _committed_record(cfg, repo, names, ws_lock, ws_cards)
        arms, experiments, variants = prior["seeds"], prior["experiments"], dict(prior.get("variants") or {})
        commit = prior["commit"]
    else:
        ws_t1 = repo / reports / "table1.json"
        if not ws_t1.is_file():
            raise SeedsError(f"{ws_t1} not found: run `dvc repro` first")
        arms = [_arm(cfg.train_seed, read_json(ws_t1.read_bytes(), str(ws_t1)), ws_cards, "workspace")]
        experiments, variants, commit = [], {}, head
        for seed in seeds:
            if seed == cfg.train_seed:
                continue
            rev, baseline, at_rev, _ = _checked_experiment(cfg, repo, seed, None, ws_lock, upstream)
            arms.append(_arm(seed, read_json(at_rev(f"{reports.as_posix()}/table1.json"), "table1.json"),
                             _cards(models, at_rev), f"experiment {experiment_name(seed)} ({rev[:12]})"))
            experiments.append({"seed": seed, "name": experiment_name(seed), "rev": rev,
                                "baseline_commit": baseline})
    for variant in names:
        spec = VARIANTS[variant]
        v_arms = []
        for seed in seeds:
            rev, baseline, at_rev, exp_lock = _checked_experiment(cfg, repo, seed, variant, ws_lock, upstream)
            name = experiment_name(seed, variant)
            source = f"experiment {name} ({rev[:12]})"
            card_path = f"{models.as_posix()}/{VARIANT_DETECTOR}/{CARD_FILE}"
            row = _variant_row(read_json(at_rev(f"{reports.as_posix()}/metrics.json"), f"{source}: metrics.json"),
                               read_json(at_rev(card_path), f"{source}: {card_path}"), source)
            v_arms.append({"seed": seed, "source": source, "name": name, "rev": rev, "baseline_commit": baseline,
                           "base_md5": exp_lock.get(upstream[1]), "row": row})
        variants[variant] = {"label": spec["label"], "set": spec["set"], "difference_label": spec["difference"],
                             "base_note": spec["base_note"], "collected_at": head, "seeds": v_arms,
                             **compare_variant(arms, v_arms)}
    variants = {k: variants[k] for k in VARIANTS if k in variants}  # one order, whatever ran first
    record = {"status": "measured", "command": COMMAND, "profile": cfg.profile, "changed_param": CHANGED_PARAM,
              "commit": commit, "inputs_md5": {u: ws_lock[u] for u in upstream}, "experiments": experiments,
              "seeds": arms, **compare(arms), "variants": variants}
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def _workspace_lock(repo: Path, head: str, upstream: list[str]) -> dict[str, str]:
    """``dvc.lock``'s outs at ``head``, refused unless it records the splits and the base and the
    workspace's ``dvc.lock`` is that one: the experiments are of ``HEAD`` and the record names its
    inputs, so a workspace rebuilt into other outputs (another machine's base, say) and not committed
    would be paired with a commit that describes something else."""
    if git(repo, "status", "--porcelain", "--", "dvc.lock"):
        raise SeedsError("dvc.lock has changes that are not committed: the workspace is not what HEAD's "
                         "dvc.lock records, and the seeds' experiments are of HEAD; commit dvc.lock and the "
                         "outputs git tracks, or `git checkout dvc.lock` and `dvc checkout`, first")
    ws_lock = lock_outs(repo, head)
    missing = [u for u in upstream if u not in ws_lock]
    if missing:
        raise SeedsError(f"dvc.lock at HEAD records no {missing}: run `dvc repro` and commit dvc.lock")
    return ws_lock


def _cards(models: Path, read: Any) -> dict[str, dict[str, Any]]:
    """Both detectors' cards (:data:`ROWS`), each read by ``read`` (a path relative to the repository ->
    bytes): from the workspace, or at an experiment's commit."""
    return {k: read_json(read(f"{models.as_posix()}/{k}/{CARD_FILE}"), f"{k}/{CARD_FILE}") for k in ROWS}


def _committed_record(cfg: Any, repo: Path, names: list[str], ws_lock: dict[str, str],
                      ws_cards: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The committed ``seeds.json`` that ``--only`` (``names``) adds to, refused unless it still
    describes this workspace (its ``dvc.lock`` outs ``ws_lock``, its detectors' cards ``ws_cards``;
    :func:`_reusable_record`): checked by :func:`run_experiments` before the first experiment starts
    and by :func:`collect` again."""
    try:
        return _reusable_record(cfg, repo / Path(cfg.paths.reports) / SEEDS_FILE, seeds_of(cfg),
                                {u: ws_lock[u] for u in upstream_paths(cfg)}, ws_cards)
    except SeedsError as e:
        raise SeedsError(f"--only {' '.join(names)}: {e}") from None


def _reusable_record(cfg: Any, path: Path, seeds: list[int], inputs_md5: dict[str, str],
                     ws_cards: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The committed record, for ``--only`` to add variants to, refused unless it still describes this
    workspace: measured on this profile, over these seeds, on the splits and base this ``dvc.lock``
    records, its workspace arm trained with the configuration of this workspace's detectors."""
    rec = load_seeds(path)
    redo = f"run `{COMMAND}` in full (without --only)"
    if rec.get("status") != "measured":
        raise SeedsError(f"--only adds variants to a measured {path.name}, and {path} is not one: {redo}")
    ws = next((a for a in rec["seeds"] if a.get("source") == "workspace"), None)
    problems = []
    if rec.get("profile") != cfg.profile:
        problems.append(f"profile {rec.get('profile')!r}, not {cfg.profile!r}")
    if sorted(a["seed"] for a in rec["seeds"]) != sorted(seeds):
        problems.append(f"seeds {[a['seed'] for a in rec['seeds']]}, not train.compare_seeds {seeds}")
    if rec.get("inputs_md5") != inputs_md5:
        problems.append(f"inputs {rec.get('inputs_md5')}, but dvc.lock records {inputs_md5}")
    if ws is None or ws["seed"] != cfg.train_seed:
        problems.append(f"its workspace arm is not seed {cfg.train_seed}")
    else:
        problems += [f"{row['model']} trained with configuration {row.get('config_hash')}, this workspace's with "
                     f"{ws_cards[k].get('config_hash')}" for k, row in ws["rows"].items()
                     if row.get("config_hash") != ws_cards[k].get("config_hash")]
    if problems:
        raise SeedsError(f"{path} no longer describes this workspace ({'; '.join(problems)}): {redo}")
    return rec


def _dotted(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _checked_experiment(cfg: Any, repo: Path, seed: int, variant: str | None, ws_lock: dict[str, str],
                        upstream: list[str]) -> tuple[str, str, Any, dict[str, str]]:
    """(commit, baseline, reader of files at the commit, its ``dvc.lock`` outs) of the experiment of ``seed`` (and
    ``variant``), refused unless it is the workspace's pipeline with ``train.seed`` (and the variant's
    parameters) changed and nothing else: its effective parameters, its code (nothing but parameters,
    ``dvc.lock`` and pipeline outputs changed) and its inputs (``dvc.lock`` md5 of the splits and the
    base: the same, but for a base the variant is meant to rebuild, which must differ)."""
    from dvc.fs import DVCFileSystem

    name = experiment_name(seed, variant)
    rev, baseline = _find(repo, seed, variant)
    fs = DVCFileSystem(repo=str(repo), rev=rev)

    def at_rev(path: str) -> bytes:
        try:
            return fs.read_bytes(path)
        except FileNotFoundError as e:
            raise SeedsError(f"{path} does not exist at {name} ({rev[:12]})") from e

    exp_cfg = config_from_dict(yaml.safe_load(at_rev("params.yaml")) or {}, source=f"params.yaml at {rev[:12]}")
    diff = param_differences(cfg.to_dict(), exp_cfg.to_dict())
    diff.pop("train.compare_seeds", None)  # the list of seeds trains nothing
    wanted = dict(VARIANTS[variant]["set"]) if variant else {}
    exp_values = exp_cfg.to_dict()
    if (set(diff) - {CHANGED_PARAM} != set(wanted) or (not variant and CHANGED_PARAM not in diff)
            or exp_cfg.train_seed != seed or any(_dotted(exp_values, k) != v for k, v in wanted.items())):
        what = ", ".join([f"{CHANGED_PARAM} (= {seed})", *(f"{k} (= {v})" for k, v in wanted.items())])
        raise SeedsError(f"experiment {name!r} must differ from the workspace in {what} only; effective "
                         f"parameters that differ: {diff}")
    exp_lock = lock_outs(repo, rev)
    base = upstream[1]
    rule = VARIANTS[variant].get("base", "same") if variant else "same"
    if rule not in BASE_RULES:
        raise SeedsError(f"variant {variant!r}: base rule {rule!r} is not one of {BASE_RULES}")
    moved = {u: [ws_lock[u], exp_lock.get(u)] for u in upstream
             if (u != base or rule == "same") and exp_lock.get(u) != ws_lock[u]}
    if moved:
        raise SeedsError(f"experiment {name!r} trained on other inputs than the workspace "
                         f"(dvc.lock md5, workspace vs experiment): {moved}")
    if rule == "rebuilt" and exp_lock.get(base) == ws_lock[base]:
        raise SeedsError(f"experiment {name!r} was meant to rebuild {[base]}, but its dvc.lock md5 is the "
                         f"workspace's: the variant changed nothing there")
    if rule == "same weights" and exp_lock.get(base) != ws_lock[base]:
        differ = _files_differing(DVCFileSystem(repo=str(repo), rev=baseline), fs, base, ignore={BASE_RECORD})
        if differ:
            raise SeedsError(f"experiment {name!r} rebuilt {base} into another base than the workspace's "
                             f"(files that differ: {differ}): it would measure the base, not "
                             f"{', '.join(VARIANTS[variant]['set'])}")
    extra = changed_beyond_results(repo, baseline, rev)
    if extra:
        raise SeedsError(f"experiment {name!r} changed more than parameters and results: {extra} "
                         f"(it ran from an unclean workspace; `dvc exp remove {name}`, commit, then `{COMMAND}`)")
    return rev, baseline, at_rev, exp_lock


def _files_differing(fs_a: Any, fs_b: Any, folder: str, ignore: set[str]) -> list[str]:
    """Files under ``folder`` (relative names) that are not byte for byte the same in the two DVC file
    systems, or are in one only; names in ``ignore`` aside."""
    def digests(fs: Any) -> dict[str, str]:
        return {rel: hashlib.sha256(fs.read_bytes(p)).hexdigest()
                for p in fs.find(folder, detail=False)
                if (rel := PurePosixPath(p).relative_to(folder).as_posix()) not in ignore}

    a, b = digests(fs_a), digests(fs_b)
    return sorted(f for f in a.keys() | b.keys() if a.get(f) != b.get(f))


def load_seeds(path: str | Path) -> dict[str, Any]:
    """``seeds.json`` as :func:`collect` writes it, or the committed placeholder (status ``not run``)."""
    p = Path(path)
    if not p.is_file():
        return {**NOT_RUN, "how": f"no {p.name} beside this table; {NOT_RUN['how']}"}
    data = read_json(p.read_bytes(), str(p))
    if data.get("status") == "not run":
        return data
    need = {"status", "seeds", "rows", "difference", "profile"}
    if data.get("status") != "measured" or not need <= set(data):
        raise SeedsError(f"{p}: a measured record has {sorted(need)} and status 'measured'")
    return data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tasks.seeds", description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="run the seeds' DVC experiments first (make seeds)")
    ap.add_argument("--only", nargs="+", metavar="VARIANT", choices=list(VARIANTS),
                    help="these variants alone, added to the committed record (which must still describe "
                         f"this workspace); variants: {', '.join(VARIANTS)}")
    ap.add_argument("--params", default="params.yaml", help="the workspace's parameter file")
    args = ap.parse_args(argv)
    cfg = load_config(args.params)
    repo = Path(args.params).resolve().parent
    try:
        if args.run:
            run_experiments(cfg, repo, args.only)
        out = collect(cfg, repo, args.only)
    except SeedsError as e:
        raise SystemExit(f"seeds: {e}") from None
    print(f"wrote {out}; `dvc repro table1` puts it in Table 1")


if __name__ == "__main__":
    main()
