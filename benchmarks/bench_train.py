"""Benchmark the training pipeline end to end: base + stage 1 + stage 2 on a profile, then a quick
ToxiCN test check (accuracy / F1 / AUC of the detector's p(是)/(p(是)+p(否)) score).

Reports wall time per step, peak RSS of the process, and the test metrics at threshold 0.5 and at the
val-tuned threshold. The full evaluator (both backends, bootstrap intervals, COLD) is ``chintox
evaluate``; this is the training engineer's check that a recipe reaches its figures.

Splits: by default the real ``<data.out_dir>/splits`` when present; ``--own-splits`` (or when they are
missing) makes them here from ../shared/datasets directly -- ToxiCN train.json split 90/10 stratified
with ``data.seed`` into train/val, COIG-CQIA (instruction+input -> output) as stage-1 records -- so the
benchmark does not depend on the data steps. The test set is ToxiCN's published test.json either way
and is read only after training, for the report.

    .venv/bin/python benchmarks/bench_train.py --workspace /tmp/chintox-bench [--set train.stage2.lora_r=64]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def own_splits(raw: Path, out_dir: Path, seed: int, val_fraction: float, cqia_max: int | None) -> None:
    toxicn = json.loads((raw / "toxicn" / "train.json").read_text(encoding="utf-8"))
    rng = random.Random(seed)
    by_label: dict[int, list[dict]] = {0: [], 1: []}
    for i, r in enumerate(toxicn):
        by_label[int(r["toxic"])].append({"id": f"toxicn-train-{i}", "text": r["content"].strip(),
                                          "label": int(r["toxic"])})
    train, val = [], []
    for recs in by_label.values():
        rng.shuffle(recs)
        k = round(len(recs) * val_fraction)
        val += recs[:k]
        train += recs[k:]
    rng.shuffle(train)
    rng.shuffle(val)
    s1 = []
    for f in sorted((raw / "coig-cqia").rglob("*.jsonl")):
        for j, line in enumerate(f.read_text(encoding="utf-8").split("\n")):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue  # the data step quarantines such rows; skip them here
            user = (r.get("instruction") or "") + (("\n" + r["input"]) if r.get("input") else "")
            if user.strip() and (r.get("output") or "").strip():
                s1.append({"id": f"{f.stem}-{j}", "messages": [{"role": "user", "content": user},
                                                               {"role": "assistant", "content": r["output"]}]})
    rng.shuffle(s1)
    if cqia_max:
        s1 = s1[:cqia_max]
    (out_dir / "splits").mkdir(parents=True, exist_ok=True)
    for name, rows in (("toxicn_train", train), ("toxicn_val", val), ("stage1", s1)):
        with open(out_dir / "splits" / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/chintox-bench"))
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="key.sub=value override")
    ap.add_argument("--steps", default="base,stage1,stage2", help="comma list of steps to run")
    ap.add_argument("--own-splits", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default: <workspace>/bench.json)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from chintox.config import load_config, parse_override

    ws = args.workspace.resolve()
    overrides = {
        "paths.models": str(ws / "models"), "paths.reports": str(ws / "reports"),
        "paths.checkpoints": str(ws / "checkpoints"),
        "mlflow.tracking_uri": f"sqlite:///{ws / 'mlruns' / 'mlflow.db'}",
        "mlflow.artifact_root": str(ws / "mlruns" / "artifacts"),
        "model.prompt_file": str(REPO / "prompts" / "toxicity_zh.txt"),
    }
    real_splits = REPO / "data" / "splits"
    if args.own_splits or not (real_splits / "toxicn_val.jsonl").is_file():
        overrides["data.out_dir"] = str(ws / "data")
    else:
        overrides["data.out_dir"] = str(REPO / "data")
    overrides.update(dict(parse_override(s) for s in args.sets))
    cfg = load_config(REPO / "params.yaml", profile=args.profile, overrides=overrides)
    if overrides["data.out_dir"] == str(ws / "data") and not (ws / "data" / "splits" / "stage1.jsonl").is_file():
        own_splits((REPO / cfg.data.raw_dir).resolve() if not Path(cfg.data.raw_dir).is_absolute()
                   else Path(cfg.data.raw_dir), ws / "data", cfg.data.seed, cfg.data.val_fraction,
                   cfg.data.cqia_max_records)

    result: dict = {"profile": args.profile, "overrides": args.sets, "threads": torch.get_num_threads(),
                    "splits": overrides["data.out_dir"], "seconds": {}}
    t_all = time.time()
    steps = args.steps.split(",")
    if "base" in steps:
        from tasks.base_model import run_base

        t = time.time()
        run_base(cfg)
        result["seconds"]["base"] = round(time.time() - t, 1)
    if "stage1" in steps:
        from tasks.train import run_stage1

        t = time.time()
        run_stage1(cfg)
        result["seconds"]["stage1"] = round(time.time() - t, 1)
    if "stage2" in steps:
        from tasks.train import run_stage2

        t = time.time()
        run_stage2(cfg)
        result["seconds"]["stage2"] = round(time.time() - t, 1)
    result["seconds"]["total_train"] = round(time.time() - t_all, 1)

    # Quick test check on ToxiCN's published test set (read only now, after training).
    from chintox.card import DetectorCard
    from chintox.metrics import binary_metrics
    from chintox.modeling import load_model, load_tokenizer
    from chintox.prompting import prompt_from_config
    from chintox.training.stage2 import Stage2Data, score_texts

    det_dir = Path(cfg.paths.models) / "stage2"
    detector = DetectorCard.read(det_dir)
    tok, model = load_tokenizer(det_dir / "merged"), load_model(det_dir / "merged")
    raw = Path(cfg.data.raw_dir) if Path(cfg.data.raw_dir).is_absolute() else (REPO / cfg.data.raw_dir)
    test = json.loads((raw / "toxicn" / "test.json").read_text(encoding="utf-8"))
    recs = [{"text": r["content"].strip(), "label": int(r["toxic"])} for r in test]
    data = Stage2Data(tok, prompt_from_config(cfg), recs, detector.max_seq_len)
    t = time.time()
    scores, _loss = score_texts(model, data, 64, desc="ToxiCN test")
    result["seconds"]["score_test"] = round(time.time() - t, 1)
    result["test_at_0.5"] = binary_metrics(data.labels, scores, 0.5)
    result["test_at_val_threshold"] = binary_metrics(data.labels, scores, detector.threshold)
    result["test_majority_accuracy"] = max(sum(data.labels), len(data.labels) - sum(data.labels)) / len(data.labels)
    result["val_metrics"] = detector.val_metrics
    result["threshold"] = detector.threshold
    result["selected_epoch"] = detector.selected_epoch
    result["peak_rss_gib"] = round(peak_rss_gib(), 2)
    out = args.out or (ws / "bench.json")
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
