"""Helpers of the feedback tests (imported by name: ``from feedbackfix import judgement``)."""

from __future__ import annotations

from typing import Any

from chintox.serving.predlog import PredictionLog, text_sha256

# one text per evaluation split: a correction of any of them is leakage
EVAL_TEXTS = {"toxicn_val": "验证集里的一句话", "toxicn_test": "测试集里的一句话", "cold_test": "COLD 测试的一句话"}
TRAIN_TEXT = "训练集里的一句话"  # not an evaluation text: correcting it is allowed


def judgement(pid: str, text: str | None, score: float, created_at: float, *, threshold: float = 0.5,
              version: str = "3") -> dict[str, Any]:
    return {"id": pid, "request_id": f"req-{pid}", "created_at": created_at,
            "text_sha256": text_sha256(text or ""), "text": text, "score": score,
            "label": int(score >= threshold), "threshold": threshold, "model_version": version,
            "backend": "hf", "truncated": False, "latency_ms": 1.0}


def write_log(url: str, rows: list[dict[str, Any]], *, log_texts: bool = True) -> None:
    plog = PredictionLog(url, log_texts=log_texts)
    try:
        plog.record(rows)
        plog.flush()
        assert plog.written == len(rows) and plog.failed == 0
    finally:
        plog.close()
