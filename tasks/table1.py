"""Table 1 step: the study's Table 1, measured here.

``run_table1`` evaluates the zero-shot base, the stage-2-only and the stage-1+2 detectors with each
backend in ``evaluate.table1_backends``, plus a TF-IDF reference (:mod:`chintox.baseline`), on ToxiCN
test and COLD test, and writes ``<reports>/table1.md`` (study layout) and ``table1.json``. Detectors
are placed in their rows by what their cards record (``stage1_enabled``), never by folder name.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from chintox.card import DetectorCard
from chintox.evaluation import evaluate_scorer
from chintox.metrics import rounded

PAPER_NOTE = (
    "**Published figures (the study's, not ours; Qwen1.5-1.8B-Chat, one A800 GPU):** best detector "
    "81.46% accuracy / 82.82 F1 on ToxiCN test, 72.70% accuracy on COLD test; vLLM 209.79 samples/s "
    "vs 33.2 samples/s without vLLM."
)


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


def render_table1(rows: list[dict[str, Any]], cfg: Any) -> str:
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
    lines += ["", "Figures in % except speed; ToxiCN test for Acc..AUC (labels).", "", PAPER_NOTE, ""]
    return "\n".join(lines)


def run_table1(cfg: Any, model_dirs: dict[str, Path] | None = None, backends: list[str] | None = None,
               log_mlflow: bool = True) -> Path:
    """Write ``<reports>/table1.md`` (and table1.json) and log them to MLflow; returns the .md path."""
    from chintox.baseline import run_tfidf_reference

    rows = table1_rows(cfg, model_dirs, backends)
    try:
        ref = run_tfidf_reference(cfg, ["toxicn_test", "cold_test"])
        rows.append({"model": "Char n-gram TF-IDF + logistic regression (reference)", "backend": "sklearn",
                     "toxicn": ref["toxicn_test"], "cold": ref["cold_test"], "speed": ref["speed"],
                     "truncated": 0})
    except Exception as e:  # noqa: BLE001
        rows.append({"model": "Char n-gram TF-IDF (reference)", "backend": "sklearn",
                     "note": f"failed: {type(e).__name__}: {e}"})
    out = Path(cfg.paths.reports)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "table1.md"
    md.write_text(render_table1(rows, cfg), encoding="utf-8")
    (out / "table1.json").write_text(json.dumps(rounded(rows), indent=2, ensure_ascii=False) + "\n")
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
