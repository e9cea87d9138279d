"""The detector card (detector.json): one typed owner, strict on read, and what its readers get."""

from __future__ import annotations

import json
import shutil

import pytest
from testutil import detector_card

from chintox.card import DetectorCard, DetectorCardError, DetectorCardMissingError


def test_round_trip_is_exact(tmp_path):
    card = detector_card(threshold=0.3841, dtype="bfloat16", max_model_len=300,
                         lineage={"data.toxicn_train": "a" * 64, "model.upstream": "hub:Qwen/Qwen1.5-1.8B-Chat"})
    card.write(tmp_path)
    back = DetectorCard.read(tmp_path)
    assert back == card
    assert json.loads((tmp_path / "detector.json").read_text(encoding="utf-8")) == card.to_dict()


def test_unknown_missing_and_mistyped_keys_name_the_file(tmp_path):
    raw = detector_card().to_dict()
    (tmp_path / "detector.json").write_text(json.dumps({**raw, "note": "x"}))
    with pytest.raises(DetectorCardError, match=r"detector\.json: unknown keys \['note'\]"):
        DetectorCard.read(tmp_path)
    (tmp_path / "detector.json").write_text(json.dumps({k: v for k, v in raw.items() if k != "dtype"}))
    with pytest.raises(DetectorCardError, match=r"detector\.json: missing keys \['dtype'\]"):
        DetectorCard.read(tmp_path)
    (tmp_path / "detector.json").write_text(json.dumps({**raw, "max_model_len": "1024"}))
    with pytest.raises(DetectorCardError, match="max_model_len must be int"):
        DetectorCard.read(tmp_path)
    (tmp_path / "detector.json").write_text(json.dumps({**raw, "lineage": {"data.other": "x"}}))
    with pytest.raises(DetectorCardError, match="unknown lineage keys"):
        DetectorCard.read(tmp_path)
    with pytest.raises(DetectorCardMissingError, match="not a detector folder"):
        DetectorCard.read(tmp_path / "nowhere")
    assert DetectorCard.find(tmp_path / "nowhere") is None


def test_detector_serves_in_the_cards_dtype_and_window(micro_detector_dir, tmp_path):
    """The served detector (what the pyfunc loads) runs in the dtype and window its card records."""
    import torch

    from chintox.detector import Detector

    d = tmp_path / "det"
    shutil.copytree(micro_detector_dir, d)
    card = DetectorCard.read(d)
    DetectorCard(**{**card.to_dict(), "dtype": "bfloat16", "max_model_len": 400}).write(d)
    det = Detector(d, device="cpu")
    try:
        assert det.scorer.model.dtype == torch.bfloat16
        assert det.scorer.max_len == 400
        assert det.threshold == card.threshold
        assert len(det.predict(["你好", "你是傻子"])) == 2
    finally:
        det.close()
