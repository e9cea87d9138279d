"""How long is the study's prompt in tokens: our tokenizer against Qwen's own.

    .venv/bin/python benchmarks/prompt_length.py [--model-dir models/base] [--qwen-tiktoken PATH]

The prefix-caching gain depends on the share of each request that the shared instruction takes, so a
tokenizer that compresses the instruction more than Qwen's does would understate it (and flatter all
other speeds). ``--qwen-tiktoken`` takes Qwen's vocabulary (see chintox/qwen_tokenizer.py for where to
get it offline); without it only our tokenizer is measured. Prints token counts of the instruction, the
prompt prefix (chat template up to the text), the suffix after the text, and the mean ToxiCN test text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "datasets"


def counts(tok: Any, texts: list[str]) -> dict[str, float]:
    from chintox.config import load_config
    from chintox.prompting import prompt_from_config
    from chintox.scoring.base import encode_prompt_ids

    cfg = load_config(REPO / "params.yaml", overrides={"model.prompt_file": str(REPO / "prompts" / "toxicity_zh.txt")})
    prompt = prompt_from_config(cfg)
    prefix_ids, suffix_ids = encode_prompt_ids(tok, prompt)
    return {"vocab": len(tok), "instruction": len(tok.encode(prompt.instruction, add_special_tokens=False)),
            "prefix": len(prefix_ids), "suffix": len(suffix_ids),
            "mean_text": statistics.mean(len(tok.encode(t, add_special_tokens=False)) for t in texts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=REPO / "models" / "base")
    ap.add_argument("--qwen-tiktoken", type=Path, help="qwen.tiktoken (default: the copy in the pinned dashscope wheel, chintox/qwen_tokenizer.py)")
    args = ap.parse_args()
    from chintox.modeling import load_tokenizer

    texts = [r["content"] for r in json.loads((SHARED / "toxicn" / "test.json").read_text(encoding="utf-8"))]
    res = {"ours": counts(load_tokenizer(str(args.model_dir)), texts)}
    if args.qwen_tiktoken:
        from chintox.qwen_tokenizer import qwen_tokenizer

        res["qwen"] = counts(qwen_tokenizer(args.qwen_tiktoken), texts)
    print(json.dumps(res, indent=2))
    if "qwen" in res:
        print(f"instruction: ours / Qwen = {res['ours']['instruction'] / res['qwen']['instruction']:.2f}")


if __name__ == "__main__":
    main()
