"""How long is the study's prompt in tokens: our tokenizer against Qwen's own vocabulary.

    .venv/bin/python benchmarks/prompt_length.py [--model-dir models/base] [--qwen-tiktoken PATH]

The prefix-caching gain depends on the share of each request that the shared instruction takes, so a
tokenizer that compresses the instruction more than Qwen's does would understate it (and flatter all
other speeds). Qwen's vocabulary (151,643 byte-level BPE ranks, the one Qwen1.5 ships converted to
``tokenizer.json``) is published on PyPI inside the ``dashscope`` SDK as ``qwen.tiktoken``; the model
hub is not reachable here, so fetch it with

    pip download dashscope==2.0.2 --no-deps -d /tmp/qtok && cd /tmp/qtok && \\
        unzip -o dashscope-2.0.2-py3-none-any.whl dashscope/resources/qwen.tiktoken

and pass ``--qwen-tiktoken /tmp/qtok/dashscope/resources/qwen.tiktoken``. Without it only our
tokenizer is measured. Prints token counts of the instruction, the whole prompt prefix (chat template
up to the text) and the mean ToxiCN test text.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "datasets"
# Qwen's pre-tokenisation pattern (dashscope/tokenizers/qwen_tokenizer.py, Qwen's tokenization_qwen.py)
QWEN_PAT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
            r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN_CHAT_PREFIX = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"


def qwen_counts(path: Path, instruction: str, texts: list[str]) -> dict[str, float]:
    import tiktoken

    ranks = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    enc = tiktoken.Encoding("qwen", pat_str=QWEN_PAT, mergeable_ranks=ranks,
                            special_tokens={"<|im_start|>": len(ranks) + 1, "<|im_end|>": len(ranks) + 2})
    return {"vocab": len(ranks), "instruction": len(enc.encode(instruction)),
            "prefix": len(enc.encode(QWEN_CHAT_PREFIX + instruction, allowed_special="all")),
            "mean_text": statistics.mean(len(enc.encode(t)) for t in texts)}


def ours(model_dir: Path, instruction: str, texts: list[str]) -> dict[str, float]:
    from chintox.config import load_config
    from chintox.modeling import load_tokenizer
    from chintox.prompting import prompt_from_config
    from chintox.scoring.base import encode_prompt_ids

    cfg = load_config(REPO / "params.yaml", overrides={"model.prompt_file": str(REPO / "prompts" / "toxicity_zh.txt")})
    tok = load_tokenizer(str(model_dir))
    prefix_ids, _ = encode_prompt_ids(tok, prompt_from_config(cfg))
    return {"vocab": len(tok), "instruction": len(tok.encode(instruction, add_special_tokens=False)),
            "prefix": len(prefix_ids),
            "mean_text": statistics.mean(len(tok.encode(t, add_special_tokens=False)) for t in texts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=REPO / "models" / "base")
    ap.add_argument("--qwen-tiktoken", type=Path, help="qwen.tiktoken (see above)")
    args = ap.parse_args()
    instruction = (REPO / "prompts" / "toxicity_zh.txt").read_text(encoding="utf-8")
    texts = [r["content"] for r in json.loads((SHARED / "toxicn" / "test.json").read_text(encoding="utf-8"))]
    res = {"ours": ours(args.model_dir, instruction, texts)}
    if args.qwen_tiktoken:
        res["qwen"] = qwen_counts(args.qwen_tiktoken, instruction, texts)
    print(json.dumps(res, indent=2))
    if "qwen" in res:
        print(f"instruction: ours / Qwen = {res['ours']['instruction'] / res['qwen']['instruction']:.2f}")


if __name__ == "__main__":
    main()
