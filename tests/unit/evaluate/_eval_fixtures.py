"""Helpers shared by the evaluation tests (imported by conftest and the test modules)."""

from __future__ import annotations

import json
import random
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
