"""Table 1 step: the study's Table 1, measured here, beside the study's own figures.

``run_table1`` evaluates the zero-shot base, the stage-2-only and the stage-1+2 detectors with each
backend in ``evaluate.table1_backends``, plus a TF-IDF reference (:mod:`chintox.baseline`), on ToxiCN
test and COLD test, and writes ``<reports>/table1.md`` (study layout) and ``table1.json``. Detectors
are placed in their rows by what their cards record (``stage1_enabled``), never by folder name.

Two more tables follow ours: every row the paper publishes (``<data.study_dir>/gao_table1.csv``, as
printed: measured by the study on one A800 GPU or through GPT-4's API, not here), and the prompt
comparison (:mod:`tasks.prompt_comparison`: the study's prompt against ours, same recipe), read from
the committed ``<reports>/prompt_comparison.json`` and marked stale when its workspace arm's detector is
no longer the stage-2 detector this table scores.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from chintox.card import DetectorCard
from chintox.dvc_lock import dvc_md5
from chintox.evaluation import evaluate_scorer
from chintox.metrics import rounded
from chintox.provenance import dir_sha256, file_sha256
from tasks.prompt_comparison import COMPARISON_FILE, DETECTOR, load_comparison
from tasks.seeds import ROWS as SEED_ROWS
from tasks.seeds import SEEDS_FILE, VARIANTS, load_seeds, upstream_paths

STUDY_TABLE = "gao_table1.csv"
STUDY_CITATION = ("Gao, \"Efficient Detection of Toxic Content in Chinese Texts with Smaller-Scale Language "
                  "Models: A Feasibility Study\" (HKUST Guangzhou), Table 1")
STUDY_COLUMNS = ("model", "train_dataset", "vllm", "test_dataset", "accuracy", "precision", "recall", "f1",
                 "auc", "samples_per_s")
STUDY_PERCENT = ("accuracy", "precision", "recall", "f1", "auc")
STUDY_TEST_SETS = {"ToxiCN": "toxicn_test", "COLD": "cold_test"}
CURVE_PARAM = "model.tiny.pretrain_steps"  # the variants of make seeds that draw the pre-training curve
CURVE_DETECTOR = "stage2"
CURVE_FIGS = (("toxicn_val.accuracy", "ToxiCN val Acc"), ("toxicn_val.f1", "ToxiCN val F1"),
              ("toxicn_test.accuracy", "ToxiCN test Acc"), ("toxicn_test.f1", "ToxiCN test F1"),
              ("cold_test.accuracy", "COLD Acc"))
CURVE_PLOT = "table1/pretrain_curve.png"  # under paths.reports (the table1 stage's plot folder)
TFIDF_MODEL = "Char n-gram TF-IDF + logistic regression (reference)"


class StudyTableError(ValueError):
    """The study's Table 1 file is missing or not as printed; the message names the file and row."""


def load_study_table(study_dir: str | Path) -> list[dict[str, Any]]:
    """Every row of ``<study_dir>/gao_table1.csv``: the paper's Table 1 as printed (figures in %,
    samples/s as printed; ``printed`` keeps each cell's text). A missing file, a header other than
    :data:`STUDY_COLUMNS`, or a row with a wrong cell is an error naming the file and the row."""
    import csv

    path = Path(study_dir) / STUDY_TABLE
    if not path.is_file():
        raise StudyTableError(f"{path}: not found (data.study_dir = {study_dir}); the study's Table 1 is read "
                              "from there, like the data sets from data.raw_dir")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise StudyTableError(f"{path}: not UTF-8 ({e})") from e
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != STUDY_COLUMNS:
        raise StudyTableError(f"{path}, row 1 (header): expected {','.join(STUDY_COLUMNS)}, got "
                              f"{','.join(header or []) or 'an empty file'}")
    rows: list[dict[str, Any]] = []
    for lineno, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        where = f"{path}, row {lineno}"
        if len(cells) != len(STUDY_COLUMNS):
            raise StudyTableError(f"{where}: {len(cells)} cells, expected {len(STUDY_COLUMNS)}")
        printed = dict(zip(STUDY_COLUMNS, (c.strip() for c in cells), strict=True))
        for col in ("model", "train_dataset"):
            if not printed[col]:
                raise StudyTableError(f"{where}: column {col!r} is empty")
        if printed["vllm"] not in ("yes", "no"):
            raise StudyTableError(f"{where}: column 'vllm' is {printed['vllm']!r}, expected yes or no")
        if printed["test_dataset"] not in STUDY_TEST_SETS:
            raise StudyTableError(f"{where}: column 'test_dataset' is {printed['test_dataset']!r}, expected "
                                  f"one of {sorted(STUDY_TEST_SETS)}")
        row: dict[str, Any] = {k: printed[k] for k in ("model", "train_dataset", "test_dataset")}
        row["set"] = STUDY_TEST_SETS[printed["test_dataset"]]  # our name for that test set
        row["vllm"] = printed["vllm"] == "yes"
        for col in (*STUDY_PERCENT, "samples_per_s"):
            try:
                v = float(printed[col])
            except ValueError:
                v = math.nan
            ok = 0 <= v <= 100 if col in STUDY_PERCENT else v > 0
            if not ok:  # NaN fails both
                want = "a percentage in [0, 100]" if col in STUDY_PERCENT else "a positive number"
                raise StudyTableError(f"{where}: column {col!r} is {printed[col]!r}, expected {want}")
            row[col] = v
        row["printed"] = printed
        rows.append(row)
    if not rows:
        raise StudyTableError(f"{path}: a header and no rows")
    return rows


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.2f}"


def _row_mismatch(label: str, d: Path) -> str | None:
    """A detector folder whose own record contradicts the Table 1 row it was put in (a stage-2-only
    detector in the stage-1+2 row, say) is reported, never scored under the wrong name."""
    card = DetectorCard.find(d)
    if card is None:
        return None  # a plain model folder (the zero-shot base)
    stage1 = card.stage1_enabled
    if "Stage 1+2" in label and stage1 is False:
        return f"not available: {d} was trained without stage 1 (detector.json stage1_enabled=false)"
    if "Stage 2 only" in label and stage1 is True:
        return f"not available: {d} was trained with stage 1 (detector.json stage1_enabled=true)"
    return None


ROW_BASE, ROW_S2, ROW_S12 = "Base, zero-shot", "Stage 2 only (ToxiCN)", "Stage 1+2 (COIG-CQIA & ToxiCN)"


def _default_rows(models: Path, ev: Any) -> dict[str, Path | None]:
    """Table 1's model rows. The configured detector folders (``evaluate.table1_detectors``: the
    pipeline's ``stage2`` and the ``table1_arm`` step's detector, trained with stage 1 flipped) are
    placed by what each one records (``stage1_enabled`` in detector.json), never by folder name."""
    rows: dict[str, Path | None] = {ROW_BASE: models / ev.base_dir, ROW_S2: None, ROW_S12: None}
    placed: dict[str, Path] = {}
    for name in ev.table1_detectors:
        card = DetectorCard.find(models / name) if (models / name).is_dir() else None
        if card is not None:
            placed.setdefault(ROW_S12 if card.stage1_enabled else ROW_S2, models / name)
    rows.update(placed)
    return rows


def table1_rows(cfg: Any, model_dirs: dict[str, Path | None] | None = None,
                backends: list[str] | None = None) -> list[dict[str, Any]]:
    models = Path(cfg.paths.models)
    ev = cfg.evaluate
    model_dirs = model_dirs or _default_rows(models, ev)
    backends = backends or list(ev.table1_backends)
    sets = ["toxicn_test", "cold_test"]
    rows: list[dict[str, Any]] = []
    for label, d in model_dirs.items():
        for be in backends:
            row: dict[str, Any] = {"model": label, "backend": be, "dir": str(d) if d else None}
            if d is None:
                where = ", ".join(str(models / n) for n in ev.table1_detectors)
                row["note"] = (f"not available: no detector for this row among {where} "
                               "(run `dvc repro table1_arm`, or `chintox table1-arm`)")
                rows.append(row)
                continue
            if not Path(d).exists():
                row["note"] = f"not available: {d} is missing"
                rows.append(row)
                continue
            mismatch = _row_mismatch(label, Path(d))
            if mismatch:
                row["note"] = mismatch
                rows.append(row)
                continue
            try:
                from chintox.scoring import make_scorer

                scorer = make_scorer(d, cfg, be)
                try:
                    m, _, _ = evaluate_scorer(cfg, scorer, sets, Path(cfg.paths.reports) / "table1" /
                                              f"{Path(d).name}_{be}", ev.threshold, ev.threshold, plots=False)
                finally:
                    scorer.close()
                row.update(toxicn=m["toxicn_test"]["default"], cold=m["cold_test"]["default"],
                           speed=m["speed"],
                           truncated=m["toxicn_test"]["truncated"] + m["cold_test"]["truncated"])
            except Exception as e:  # noqa: BLE001 - a failed row is reported, not fatal
                row["note"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            rows.append(row)
    return rows


def render_table1(rows: list[dict[str, Any]], cfg: Any, published: list[dict[str, Any]] | None = None,
                  comparison: dict[str, Any] | None = None, seeds: dict[str, Any] | None = None) -> str:
    """Table 1 as markdown: our rows, then the study's published rows (when given), then the prompt
    comparison (when given: :func:`comparison_section`'s record)."""
    lines = [
        "# Table 1: toxic-content detection on ToxiCN test and COLD test",
        "",
        (f"Profile `{cfg.profile}`, model `{cfg.model.base}`; threshold {cfg.evaluate.threshold} "
         "(score = p(是) / (p(是) + p(否)) at the first answer position). AUC from scores; "
         "\"AUC (labels)\" is the study's AUC from hard labels. samples/s: ToxiCN test + COLD test, "
         "start-up excluded (start-up in its own column; for TF-IDF it is the training time)."),
        "",
        "| Model | Backend | Acc | P | R | F1 | AUC | AUC (labels) | COLD Acc | samples/s | start-up s | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, c, s = r.get("toxicn"), r.get("cold"), r.get("speed")
        if t is None:
            lines.append(f"| {r['model']} | {r['backend']} | | | | | | | | | | {r.get('note', '')} |")
            continue
        note = f"{r['truncated']} texts truncated" if r.get("truncated") else ""
        lines.append(
            f"| {r['model']} | {r['backend']} | {_pct(t['accuracy'])} | {_pct(t['precision'])} | "
            f"{_pct(t['recall'])} | {_pct(t['f1'])} | {_pct(t['auc'])} | {_pct(t['auc_hard'])} | "
            f"{_pct(c['accuracy'])} | {s['samples_per_s']:.1f} | {s['startup_seconds']:.1f} | {note} |")
    lines += ["", "Figures in % except speed; ToxiCN test for Acc..AUC (labels).", ""]
    base = base_summary(Path(cfg.paths.models) / cfg.evaluate.base_dir)
    if base:
        lines += [base, ""]
    if published is not None:
        lines += _published_lines(published)
    if comparison is not None:
        lines += _comparison_lines(comparison)
    if seeds is not None:
        lines += seeds_lines(seeds, {k: _config_hash(Path(cfg.paths.models) / k) for k in SEED_ROWS},
                             {u: dvc_md5(u) for u in upstream_paths(cfg)})
        lines += curve_lines(pretrain_curve(seeds, read_build_info(Path(cfg.paths.models) / cfg.evaluate.base_dir)),
                             tfidf_row(rows))
    return "\n".join(lines)


def tfidf_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The measured TF-IDF reference row of Table 1, None when it failed."""
    return next((r for r in rows if r["model"] == TFIDF_MODEL and "toxicn" in r), None)


def _config_hash(detector: Path) -> str | None:
    card = DetectorCard.find(detector)
    return card.config_hash if card is not None else None


def read_build_info(base_dir: Path) -> dict[str, Any] | None:
    """The base step's build record (``build_info.json``), None when the base has none."""
    f = base_dir / "build_info.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None


def base_summary(base_dir: Path) -> str | None:
    """One paragraph on the base the detectors were built on, from the base step's ``build_info.json``:
    its size and, for a pre-trained tiny base, the corpus (which sources, COLD train's texts in or out),
    the tokens it saw and its held-out perplexity before and after."""
    info = read_build_info(base_dir)
    if info is None or info.get("kind") != "tiny":
        return None
    text = (f"Base: the tiny model built here, {info['parameters'] / 1e6:.1f}M parameters, "
            f"{info['vocab_size']}-token BPE vocabulary")
    corpus = info.get("pretrain_corpus") or {}
    if not info.get("pretrain_steps"):
        return text + "; not pre-trained (random weights)."
    src = corpus.get("sources", {})
    names = {"coig_cqia": "COIG-CQIA", "toxicn_train": "ToxiCN train", "cold_train": "COLD train (texts only)"}
    parts = ", ".join(f"{names.get(k, k)} {v['texts']:,} texts" for k, v in src.items())
    cold = "in" if "cold_train" in src else "out (`model.tiny.pretrain_cold_train: false`)"
    left = sum(v.get("left_out_held_out_text", 0) for v in src.values())
    repeat = info.get("pretrain_domain_repeat", 1)
    rep = (f", in which each ToxiCN train and COLD train text is {repeat} times "
           f"(`model.tiny.pretrain_domain_repeat`)" if repeat > 1 else "")
    return (text + f"; pre-trained as a causal LM for {info['pretrain_steps']} steps "
            f"({info['pretrain_tokens'] / 1e6:.1f}M tokens, {info['pretrain_passes']:.2f} passes over the corpus{rep}) "
            f"on {corpus.get('chars', 0) / 1e6:.1f}M characters: {parts}; COLD train's texts {cold}; "
            f"{left} texts left out as validation/evaluation texts; corpus sha256 "
            f"`{corpus.get('sha256', '')[:12]}`. Held-out perplexity on the {info['heldout_texts']} ToxiCN val "
            f"texts: {info['heldout_perplexity_before']:.0f} before pre-training, "
            f"{info['heldout_perplexity_after']:.1f} after.")


def _mean_sd(d: dict[str, float]) -> str:
    return f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f} ({100 * d['min']:.2f}–{100 * d['max']:.2f})"


def seeds_lines(rec: dict[str, Any], current: dict[str, str | None],
                inputs: dict[str, str | None] | None = None) -> list[str]:
    """The multi-seed section (``seeds.json`` from ``make seeds``): each detector's figures as mean ±
    standard deviation (range) over the training seeds, and the paired difference. ``current``: the
    ``config_hash`` of each row's detector in this workspace (None: no card); a row measured with another
    is marked Stale. ``inputs``: the DVC md5 of this workspace's splits and base (None: not there); the
    section is Stale when the record was measured on others (a base rebuilt on another machine is
    another base)."""
    lines = ["## Over training seeds: stage 1 + 2, and each variant, against stage 2 only", ""]
    if rec.get("status") != "measured":
        return [*lines, f"Not run yet: {rec.get('how', '`make seeds`')}.", ""]
    seeds = [a["seed"] for a in rec["seeds"]]
    ws = next(a for a in rec["seeds"] if a["source"] == "workspace")
    lines.append(
        f"`{rec['command']}`, profile `{rec['profile']}`: the two detectors trained with `train.seed` = "
        f"{', '.join(map(str, seeds))} (seed {ws['seed']} is this workspace; each other seed a DVC experiment "
        "with that parameter and nothing else changed, the same splits and base); figures in %, mean ± "
        "standard deviation (min–max) over the seeds, threshold 0.5. A difference is called larger than the "
        "spread when every seed's paired difference has the same sign and its mean exceeds their standard "
        "deviation.")
    stale = [row["model"] for k, row in ws["rows"].items()
             if current.get(k) is not None and row.get("config_hash") != current[k]]
    if stale:
        lines += ["", (f"**Stale**: {' and '.join(stale)} measured with another configuration than this table's "
                       f"detector. Run `{rec['command']}` again.")]
    moved = {u: [rec.get("inputs_md5", {}).get(u), md5] for u, md5 in (inputs or {}).items()
             if md5 is not None and rec.get("inputs_md5", {}).get(u) != md5}
    if moved:
        lines += ["", ("**Stale**: measured on other inputs than this table's (DVC md5, record vs this "
                       f"workspace: {'; '.join(f'{u} {a} vs {b}' for u, (a, b) in moved.items())}). Run "
                       f"`{rec['command']}` again.")]
    figs = [("toxicn_val.f1", "ToxiCN val F1"), ("toxicn_val.accuracy", "ToxiCN val Acc"),
            ("toxicn_test.accuracy", "ToxiCN test Acc"), ("toxicn_test.f1", "ToxiCN test F1"),
            ("cold_test.accuracy", "COLD Acc"), ("cold_test.f1", "COLD F1")]
    lines += ["", "| Detector | " + " | ".join(n for _, n in figs) + " |", "|---" * (len(figs) + 1) + "|"]
    for key, label in SEED_ROWS.items():
        lines.append(f"| {label} | " + " | ".join(_mean_sd(rec["rows"][key][f]) for f, _ in figs) + " |")
    def spread(d: dict[str, Any]) -> str:
        return _mean_sd(d) + (" **larger than the spread**" if d["beyond_spread"] else " within the spread")

    lines.append("| Stage 1+2 minus stage 2 only | " + " | ".join(spread(rec["difference"][f]) for f, _ in figs) + " |")
    variants = rec.get("variants") or {}
    for v in variants.values():
        lines.append(f"| {v['label']} | " + " | ".join(_mean_sd(v["row"][f]) for f, _ in figs) + " |")
        lines.append(f"| {v['difference_label']} | " + " | ".join(spread(v["difference"][f]) for f, _ in figs) + " |")
    for name, v in variants.items():
        sets = ", ".join(f"`{k}` = {json.dumps(val)}" for k, val in v["set"].items())
        lines += ["", (f"{v['label']}: DVC experiments `seed-<s>-{name}`, the evaluate stage with {sets} and "
                       f"`train.seed` = {', '.join(str(a['seed']) for a in v['seeds'])}, nothing else changed "
                       f"(the same splits; {v.get('base_note', 'the base rebuilt by that parameter')}); each "
                       "seed's difference is paired with the stage-2 detector above of the same seed.")]
    for name, spec in VARIANTS.items():
        if name not in variants:
            lines += ["", f"{spec['label']}: not in this record; `{rec['command']} ONLY={name}` runs it."]
    return [*lines, ""]


def pretrain_curve(rec: dict[str, Any], base_info: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Stage 2 only against the base's pre-training, from the seeds record: the workspace arm (steps and
    tokens from its base's build record) and each variant that changes :data:`CURVE_PARAM` and nothing
    else, by steps; each point's figures over the seeds (mean, std, range). A variant's tokens are its
    steps times the workspace's tokens per step (the variants change the steps only). Empty unless the
    record is measured, the base is a tiny one and there are two points at least."""
    if rec.get("status") != "measured" or not base_info or base_info.get("kind") != "tiny" \
            or "pretrain_steps" not in base_info:
        return []
    steps = int(base_info["pretrain_steps"])
    per_step = base_info.get("pretrain_tokens", 0) / steps if steps else None
    points = [{"arm": "workspace", "steps": steps, "tokens": int(base_info.get("pretrain_tokens", 0)),
               "figures": {f: rec["rows"][CURVE_DETECTOR][f] for f, _ in CURVE_FIGS}}]
    for name, v in (rec.get("variants") or {}).items():
        if set(v.get("set", {})) != {CURVE_PARAM}:
            continue
        n = int(v["set"][CURVE_PARAM])
        tokens = 0 if n == 0 else (None if per_step is None else round(n * per_step))
        points.append({"arm": name, "steps": n, "tokens": tokens,
                       "figures": {f: v["row"][f] for f, _ in CURVE_FIGS}})
    return sorted(points, key=lambda p: p["steps"]) if len(points) > 1 else []


def curve_lines(points: list[dict[str, Any]], reference: dict[str, Any] | None) -> list[str]:
    """The curve as a markdown table (figures in %, mean ± std (min–max) over the seeds)."""
    if not points:
        return []
    lines = ["### Stage 2 only against pre-training tokens", "",
             (f"The stage-2 detector of each seed above, by its base's pre-training (`{CURVE_PARAM}`): the "
              "workspace's base and each variant that changes that parameter alone. Plot: "
              f"`{CURVE_PLOT}`.")]
    if reference is not None:
        lines[-1] += (f" TF-IDF on the same split, ToxiCN test: Acc {_pct(reference['toxicn']['accuracy'])}, "
                      f"F1 {_pct(reference['toxicn']['f1'])}; COLD Acc {_pct(reference['cold']['accuracy'])}.")
    lines += ["", "| Pre-training steps | Tokens | Arm | " + " | ".join(n for _, n in CURVE_FIGS) + " |",
              "|---" * (len(CURVE_FIGS) + 3) + "|"]
    for p in points:
        tokens = "?" if p["tokens"] is None else f"{p['tokens'] / 1e6:.1f}M"
        lines.append(f"| {p['steps']:,} | {tokens} | {p['arm']} | "
                     + " | ".join(_mean_sd(p["figures"][f]) for f, _ in CURVE_FIGS) + " |")
    return [*lines, ""]


def write_curve_plot(points: list[dict[str, Any]], reference: dict[str, Any] | None, path: Path) -> Path | None:
    """The curve as a PNG: each figure's mean over the seeds against pre-training tokens, the standard
    deviation as error bars, TF-IDF's ToxiCN test and COLD figures as dotted lines. None (no file) without a curve."""
    pts = [p for p in points if p["tokens"] is not None]
    if len(pts) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p["tokens"] / 1e6 for p in pts]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (f, label), style in zip(CURVE_FIGS, ("o--", "s--", "o-", "s-", "^:"), strict=True):
        line = ax.errorbar(x, [100 * p["figures"][f]["mean"] for p in pts],
                           yerr=[100 * p["figures"][f]["std"] for p in pts], fmt=style, capsize=3, label=label)
        ref_set = {"toxicn_test": "toxicn", "cold_test": "cold"}.get(f.split(".")[0])
        if reference is not None and ref_set is not None:
            ax.axhline(100 * reference[ref_set][f.split(".")[1]], ls=":", lw=1, color=line[0].get_color(),
                       label=f"TF-IDF {label}")
    ax.set(xlabel="pre-training tokens (millions)", ylabel="%",
           title="Stage 2 only against pre-training (mean ± sd over seeds)")
    ax.legend(fontsize=8, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _published_lines(published: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Published (Gao, one A800 GPU / GPT-4 API): not measured here",
        "",
        (f"The study's figures, not ours: every row of {STUDY_CITATION}, as printed (`data.study_dir`/"
         f"`{STUDY_TABLE}`). GPT-4 was run through its API, every other model on one A800 GPU, so their "
         "samples/s are not comparable with ours. The study's AUC is from hard labels "
         "(our \"AUC (labels)\")."),
        "",
        "| Model | Training data | vLLM | Test set | Acc | P | R | F1 | AUC | samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in published:
        c = r["printed"]
        lines.append(f"| {c['model']} | {c['train_dataset']} | {c['vllm']} | {c['test_dataset']} | "
                     + " | ".join(c[k] for k in (*STUDY_PERCENT, "samples_per_s")) + " |")
    return [*lines, "", "Figures in % except speed, as printed.", ""]


def comparison_section(comparison: dict[str, Any], current_detector_sha256: str | None,
                       profile: str) -> dict[str, Any]:
    """The prompt comparison as Table 1 shows it: the record of ``prompt_comparison.json`` plus whether
    it still describes this table's detector (``stale``: its workspace arm's detector is not the
    current stage-2 detector, or it was measured on another profile; None when that cannot be told)."""
    out = {"file": COMPARISON_FILE, **comparison}
    if comparison.get("status") != "measured":
        return out
    ours = next(a for a in comparison["arms"] if a["arm"] == "ours")["detector_sha256"]
    out["current_detector_sha256"] = current_detector_sha256
    reasons = []
    if current_detector_sha256 is None:
        reasons.append(f"no {DETECTOR} detector to compare with")
    elif ours != current_detector_sha256:
        reasons.append(f"measured with detector {ours[:12]}, but the current {DETECTOR} detector is "
                       f"{current_detector_sha256[:12]}")
    if comparison["profile"] != profile:
        reasons.append(f"measured on profile {comparison['profile']!r}, this table is profile {profile!r}")
    out["stale"] = None if current_detector_sha256 is None else bool(reasons)
    out["stale_reasons"] = reasons
    return out


def _comparison_lines(comp: dict[str, Any]) -> list[str]:
    lines = ["## Prompt: the study's against ours, same recipe", ""]
    if comp.get("status") != "measured":
        return [*lines, f"Not run yet: {comp.get('how', '`make prompt-comparison`')}.", ""]
    exp = comp["experiment"]
    old, new = exp["params_changed"][comp.get("changed_param", "model.prompt_file")]
    lines.append(
        f"`{comp['command']}`, profile `{comp['profile']}`: DVC experiment `{exp['name']}` (commit "
        f"{exp['rev'][:12]}, based on commit {exp['baseline_commit'][:12]}), the pipeline with "
        f"`model.prompt_file` `{old}` -> `{new}` and nothing else changed; both arms scored the same "
        "evaluation files. \"tuned\": each detector's own threshold, tuned on ToxiCN val when it was "
        "trained (never on a test set); AUC from scores, so one per set.")
    if exp.get("uncommitted_changes_included"):
        changed = ", ".join(exp["uncommitted_changes_included"])
        lines += ["", f"The experiment also included uncommitted changes to: {changed}."]
    if comp.get("stale"):
        lines += ["", f"**Stale**: {'; '.join(comp['stale_reasons'])}. Run `{comp['command']}` again."]
    elif comp.get("stale") is None:
        lines += ["", f"Not checked against this table's detector: {'; '.join(comp['stale_reasons'])}."]
    cols = [f"{s} {m}" for s in ("ToxiCN", "COLD") for m in ("Acc", "F1", "AUC", "Acc (tuned)", "F1 (tuned)")]
    lines += [
        "",
        "| Prompt | prompt sha256 | detector sha256 | tuned threshold | " + " | ".join(cols) + " |",
        "|---" * (4 + len(cols)) + "|",
    ]
    names = {"ours": "ours", "study": "the study's"}
    for a in comp["arms"]:
        cells = [f"{names.get(a['arm'], a['arm'])}: `{a['prompt_file']}`", a["prompt_sha256"][:12],
                 a["detector_sha256"][:12], f"{a['toxicn_test'].get('threshold_tuned', 'n/a')}"]
        for s in ("toxicn_test", "cold_test"):
            d, t = a[s]["default"], a[s]["tuned"]
            cells += [_pct(d["accuracy"]), _pct(d["f1"]), _pct(d["auc"]), _pct(t["accuracy"]), _pct(t["f1"])]
        lines.append("| " + " | ".join(cells) + " |")
    default = ", ".join(sorted({str(a.get("threshold_default", "n/a")) for a in comp["arms"]}))
    note = f"Figures in %, on ToxiCN test and COLD test; Acc and F1 at threshold {default} and at the tuned threshold."
    return [*lines, "", note, ""]


def run_table1(cfg: Any, model_dirs: dict[str, Path] | None = None, backends: list[str] | None = None,
               log_mlflow: bool = True) -> Path:
    """Write ``<reports>/table1.md`` (and table1.json) and log them to MLflow; returns the .md path.
    The study's table and the prompt comparison are read first, so a broken file stops the step before
    any scoring."""
    from chintox.baseline import run_tfidf_reference

    published = load_study_table(cfg.data.study_dir)
    out = Path(cfg.paths.reports)
    comparison = load_comparison(out / COMPARISON_FILE)
    seeds = load_seeds(out / SEEDS_FILE)
    rows = table1_rows(cfg, model_dirs, backends)
    try:
        ref = run_tfidf_reference(cfg, ["toxicn_test", "cold_test"])
        rows.append({"model": TFIDF_MODEL, "backend": "sklearn",
                     "toxicn": ref["toxicn_test"], "cold": ref["cold_test"], "speed": ref["speed"],
                     "truncated": 0})
    except Exception as e:  # noqa: BLE001
        rows.append({"model": "Char n-gram TF-IDF (reference)", "backend": "sklearn",
                     "note": f"failed: {type(e).__name__}: {e}"})
    detector = Path(cfg.paths.models) / DETECTOR
    comparison = comparison_section(comparison, dir_sha256(detector) if detector.is_dir() else None, cfg.profile)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "table1.md"
    md.write_text(render_table1(rows, cfg, published, comparison, seeds), encoding="utf-8")
    record = {
        "measured": rounded(rows),
        "published": {"measured_here": False, "source": STUDY_CITATION, "file": STUDY_TABLE,
                      "read_from": "data.study_dir", "sha256": file_sha256(Path(cfg.data.study_dir) / STUDY_TABLE),
                      "units": "accuracy..auc in %, samples_per_s, as printed",
                      "rows": [{k: v for k, v in r.items() if k != "printed"} for r in published]},
        "prompt_comparison": comparison,
        "seeds": seeds,
    }
    base_info = read_build_info(Path(cfg.paths.models) / cfg.evaluate.base_dir)
    if base_info is not None:
        record["base"] = base_info
    curve = pretrain_curve(seeds, base_info)
    record["pretrain_curve"] = curve
    write_curve_plot(curve, tfidf_row(rows), out / CURVE_PLOT)
    (out / "table1.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    if log_mlflow:
        import mlflow

        from chintox.tracking import stage_run

        with stage_run(cfg, "table1"):
            for r in rows:
                if "toxicn" not in r:
                    continue
                key = re.sub(r"[^A-Za-z0-9]+", "_", r["model"].split(" (")[0]).strip("_").lower()
                key = f"{key}.{r['backend']}"
                mlflow.log_metrics({f"{key}.toxicn_f1": r["toxicn"]["f1"],
                                    f"{key}.toxicn_acc": r["toxicn"]["accuracy"],
                                    f"{key}.cold_acc": r["cold"]["accuracy"],
                                    f"{key}.samples_per_s": r["speed"]["samples_per_s"]})
            mlflow.log_artifact(str(md))
            mlflow.log_artifact(str(out / "table1.json"))
    return md
