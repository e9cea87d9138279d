"""Small raw-data fixtures in the published layout, written by the tests into tmp_path (helper module,
not a conftest, so it does not shadow tests/conftest.py)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

TOXICN_TRAIN = [
    # (content, toxic)
    ("你们地域黑真的好无聊", 1), ("今天天气不错，出去走走", 0), ("这种人就该滚出去", 1), ("我觉得说得挺有道理", 0),
    ("女拳又来了", 1), ("大家和平讨论吧", 0), ("黑鬼都是垃圾", 1), ("支持平等对待每个人", 0),
    ("乡下人素质就是低", 1), ("这个观点很新颖", 0), ("同性恋都是变态", 1), ("谢谢分享经验", 0),
    ("河南人都是骗子", 1), ("学到了很多东西", 0), ("娘炮滚粗", 1), ("这个视频拍得真好", 0),
    ("外地人别来我们城市", 1), ("祝你生活愉快", 0), ("胖子不配谈恋爱", 1), ("期待下一期节目", 0),
]
TOXICN_TEST = [("地图炮没意思", 1), ("欢迎来到这里", 0), ("某地人都很懒", 1), ("讲得很清楚", 0)]
COLD_TRAIN = [("外国人都滚", 1), ("今天吃了火锅", 0), ("那个地方的人都很坏", 1), ("电影挺好看的", 0)]
COLD_TEST = [("黑人就是懒", 1, 2), ("我喜欢这首歌", 0, 0), ("反对地域歧视", 0, 3), ("你这个蠢货", 1, 1)]
CQIA = [
    {"instruction": "解释成语：画蛇添足", "input": "", "output": "比喻做了多余的事，反而不恰当。"},
    {"instruction": "翻译成英文", "input": "你好", "output": "Hello"},
    {"instruction": "写一句关于春天的诗", "input": "", "output": "春风又绿江南岸。"},
]


def toxicn_obj(content, toxic, length=None, **extra):
    obj = {"platform": "zhihu", "topic": "region", "content": content, "toxic": toxic,
           "toxic_type": 1 if toxic == 1 else 0, "expression": 0, "target": [0, 0, 0, 0, 0],
           "length": len(content) if length is None and isinstance(content, str) else length}
    obj.update(extra)
    return obj


def cold_csv(rows, test: bool) -> str:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    header = ["", "split", "topic", "label"] + (["fine-grained-label"] if test else []) + ["TEXT"]
    w.writerow(header)
    for i, r in enumerate(rows):
        text, label = r[0], r[1]
        cells = [i, "test" if test else "train", "race", label]
        if test:
            cells.append(r[2])
        w.writerow(cells + [text])
    return "\ufeff" + buf.getvalue()


def write_raw(root: Path, toxicn_train=None, toxicn_test=None, cold_train=None, cold_test=None, cqia=None) -> Path:
    """Write the raw layout under ``root`` (lists of tuples/objects, or a ``str``/``bytes`` for the
    exact file content). Returns ``root``."""
    (root / "toxicn").mkdir(parents=True, exist_ok=True)
    (root / "cold").mkdir(parents=True, exist_ok=True)
    (root / "coig-cqia" / "x").mkdir(parents=True, exist_ok=True)

    def put(path: Path, content):
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    def tox(rows):
        if isinstance(rows, (str, bytes)):
            return rows
        return json.dumps([r if isinstance(r, dict) else toxicn_obj(*r) for r in rows], ensure_ascii=False)

    put(root / "toxicn" / "train.json", tox(TOXICN_TRAIN if toxicn_train is None else toxicn_train))
    put(root / "toxicn" / "test.json", tox(TOXICN_TEST if toxicn_test is None else toxicn_test))
    ct = COLD_TRAIN if cold_train is None else cold_train
    put(root / "cold" / "train.csv", ct if isinstance(ct, (str, bytes)) else cold_csv(ct, test=False))
    cs = COLD_TEST if cold_test is None else cold_test
    put(root / "cold" / "test.csv", cs if isinstance(cs, (str, bytes)) else cold_csv(cs, test=True))
    cq = CQIA if cqia is None else cqia
    put(root / "coig-cqia" / "x" / "y.jsonl",
        cq if isinstance(cq, (str, bytes)) else "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in cq))
    return root

