"""Helpers shared by the evaluation tests (imported by conftest and the test modules)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from testutil import micro_config

REPO = Path(__file__).resolve().parents[3]


def micro_cfg_at(root: Path, **overrides):
    """The `micro` profile with every output under ``root``."""
    return micro_config(root, **overrides)


TOXIC = ["你这个废物真恶心，滚出去", "这些人都是垃圾，活该被骂", "地域黑就是脑子有病，全家都蠢",
         "女人就该在家做饭，别出来丢人", "黑鬼滚回非洲去吧", "这种人渣死了算了"]
CLEAN = ["今天天气很好，我们去公园散步吧", "这篇文章写得很客观，值得一读", "请问去北京的火车几点出发？",
         "反对一切形式的地域歧视", "我觉得这个政策对大家都有好处", "谢谢你的帮助，祝你生活愉快"]


def make_texts(n: int, seed: int = 0) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        base = rng.choice(TOXIC if label else CLEAN)
        extra = "".join(rng.choice(TOXIC + CLEAN)[: rng.randint(0, 8)] for _ in range(rng.randint(0, 3)))
        out.append((base + extra, label))
    return out



def write_splits(root: Path, n: int = 40) -> None:
    sdir = root / "data" / "splits"
    sdir.mkdir(parents=True, exist_ok=True)
    for name, seed in (("toxicn_train", 1), ("toxicn_val", 2), ("toxicn_test", 3), ("cold_test", 4)):
        with (sdir / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for i, (text, label) in enumerate(make_texts(n, seed)):
                rec = {"id": f"{name}-{i}", "text": text, "label": label, "split": name}
                if name.startswith("toxicn"):
                    rec.update(source="toxicn", topic=["race", "gender", "region"][i % 3],
                               toxic_type=label * (1 + i % 2), expression=label * (1 + i % 3),
                               target=[0, 0, 0, 0, 0], platform="zhihu")
                else:
                    rec.update(source="cold", topic=["race", "gender", "region"][i % 3],
                               fine_grained_label=label * (1 + i % 3))
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")


STUDY_HEADER = "model,train_dataset,vllm,test_dataset,accuracy,precision,recall,f1,auc,samples_per_s"
STUDY_ROWS = [  # four rows of the paper's Table 1, as printed
    "GPT4-Turbo-preview,-,no,ToxiCN,75.07,84.92,64.52,73.33,75.89,0.7216",
    "Qwen1.5-1.8B-Chat,ToxiCN,no,ToxiCN,81.46,81.32,84.38,82.82,81.33,33.235",
    "Qwen1.5-1.8B-Chat,ToxiCN,no,COLD,72.70,62.87,75.79,68.73,73.24,37.379",
    "Qwen1.5-1.8B-Chat,COIG-CQIA & ToxiCN,yes,ToxiCN,79.72,80.17,81.87,81.01,79.59,211.95",
]


def write_study_table(study_dir: Path, rows: list[str] | None = None, header: str = STUDY_HEADER) -> Path:
    """``<study_dir>/gao_table1.csv`` (the study material's Table 1 file) with ``rows`` (default: four
    printed rows)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / "gao_table1.csv"
    path.write_text("\n".join([header, *(STUDY_ROWS if rows is None else rows)]) + "\n", encoding="utf-8")
    return path


def fake_metrics(accuracy: float, detector_sha256: str, eval_data: str = "e" * 64) -> dict:
    """A ``reports/metrics.json`` as the evaluate step writes it, with made-up figures."""
    block = {"accuracy": accuracy, "precision": 0.7, "recall": 0.8, "f1": accuracy + 0.01, "auc": accuracy + 0.05,
             "auc_hard": accuracy}
    sets = {s: {"n": 40, "threshold_tuned": 0.45, "default": block, "tuned": {**block, "accuracy": accuracy + 0.02},
                "truncated": 0, "empty": 0, "samples_per_s": 100.0} for s in ("toxicn_test", "cold_test")}
    return {**sets, "speed": {"samples_per_s": 100.0}, "backend": "hf", "model": "models/stage2",
            "threshold_default": 0.5, "threshold_source": "detector.json", "detector_sha256": detector_sha256,
            "eval_data_sha256": {"toxicn_test": eval_data, "cold_test": eval_data}}


def sh(cwd: Path, *cmd: str) -> str:
    """Run ``cmd`` in ``cwd``; fail the test with its output unless it exits 0; return its stdout."""
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{cmd}: {out.stdout}\n{out.stderr}"
    return out.stdout


def commit_pipeline(repo: Path) -> None:
    """Make ``repo`` (params.yaml, dvc.yaml and the stages' scripts already written) a git + DVC
    repository whose pipeline has run: git and DVC initialised, ``dvc repro``, everything committed."""
    dvc = str(Path(sys.executable).parent / "dvc")
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "config", "user.email", "test@example.com")
    sh(repo, "git", "config", "user.name", "test")
    sh(repo, dvc, "init", "-q")
    sh(repo, dvc, "repro", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", "pipeline and its results")
