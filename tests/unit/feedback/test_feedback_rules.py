"""The pure parts: label spellings, rule priority, the conflict rules, the review-queue selection."""

from __future__ import annotations

import pytest

from chintox.feedback import text_key
from chintox.feedback.queue import candidates, select
from chintox.feedback.rules import RULES, RawRow, RowChecker, parse_label, resolve
from chintox.textnorm import normalise


@pytest.mark.parametrize(("value", "label"), [
    (0, 0), (1, 1), ("0", 0), ("1", 1), (" 1 ", 1), ("1.0", 1), ("0.0", 0), (1.0, 1), (0.0, 0),
    (True, None), (False, None), ("true", None), ("toxic", None), (2, None), ("-1", None), (0.5, None),
    ("nan", None), ("", None), (None, None), ([1], None),
])
def test_parse_label(value, label):
    assert parse_label(value) == label


def _checker(**kw) -> RowChecker:
    return RowChecker(judgements=kw.pop("judgements", {}), leak_keys=kw.pop("leak_keys", set()),
                      latest=kw.pop("latest", {}), max_text_chars=kw.pop("max_text_chars", 10), **kw)


def test_first_rule_wins_in_the_documented_order():
    c = _checker(leak_keys={normalise("泄漏")})
    # every row breaks several rules; the earliest in RULES is the one reported
    cases = [
        (RawRow(1, None, "bad"), "malformed_row"),
        (RawRow(2, {"text": "", "label": ""}), "label_missing"),           # also text_missing
        (RawRow(3, {"text": "", "label": "2"}), "label_invalid"),          # also text_missing
        (RawRow(4, {"text": "", "prediction_id": "", "label": "1"}), "text_missing"),
        (RawRow(5, {"text": "   ", "prediction_id": "nope", "label": "1"}), "prediction_unknown"),
        (RawRow(6, {"text": "   ", "label": "1"}), "text_empty"),
        (RawRow(7, {"text": "泄漏" * 6, "label": "1"}), "text_too_long"),
        (RawRow(8, {"text": "泄漏！", "label": "1"}), "leakage"),
    ]
    got = [(c.check(r).rule, rule) for r, rule in cases]
    assert [g for g, _ in got] == [rule for _, rule in got]
    assert [rule for _, rule in cases] == sorted((rule for _, rule in cases), key=RULES.index)


def test_duplicate_is_per_moderator_and_relabelling_back_is_heard():
    c = _checker()
    rows = [RawRow(1, {"text": "你好", "label": 1}), RawRow(2, {"text": "你好！", "label": "1"}),   # same text
            RawRow(3, {"text": "你好", "label": 0}), RawRow(4, {"text": "你好", "label": 1}),
            RawRow(5, {"text": "你好", "label": 1, "moderator": "b"})]
    assert [d.rule for d in c.check_all(rows)] == [None, "duplicate", None, None, None]
    # the store's latest label for (text, moderator) counts as an earlier row
    key = text_key(normalise("你好"))
    c2 = _checker(latest={(key, "a"): 0}, moderator="a")
    assert [d.rule for d in c2.check_all([RawRow(1, {"text": "你好", "label": 0}),
                                          RawRow(2, {"text": "你好", "label": 1})])] == ["duplicate", None]


def test_prediction_rules_and_fill_from_the_log():
    import hashlib

    logged = {"p1": {"id": "p1", "text": "原来的话", "text_sha256": "x", "model_version": "7", "label": 1},
              "p2": {"id": "p2", "text": None, "model_version": "7", "label": 0,
                     "text_sha256": hashlib.sha256("没存的话".encode()).hexdigest()}}
    c = _checker(judgements=logged)
    d = c.check(RawRow(1, {"prediction_id": "p1", "label": 0}))
    assert (d.rule, d.text, d.model_version, d.predicted_label) == (None, "原来的话", "7", 1)
    assert c.check(RawRow(2, {"prediction_id": "p1", "text": "原来的话。", "label": 1})).rule is None  # same norm
    assert c.check(RawRow(3, {"prediction_id": "p1", "text": "别的话", "label": 0})).rule == "prediction_text_mismatch"
    assert c.check(RawRow(4, {"prediction_id": "p2", "label": 1})).rule == "prediction_without_text"
    assert c.check(RawRow(5, {"prediction_id": "p2", "text": "没存的话", "label": 1})).rule is None  # sha256 agrees
    assert c.check(RawRow(6, {"prediction_id": "p2", "text": "没存的", "label": 0})).rule == "prediction_text_mismatch"
    assert c.check(RawRow(7, {"prediction_id": "p3", "label": 0})).rule == "prediction_unknown"


def _corr(text: str, label: int) -> dict:
    return {"text_key": text_key(normalise(text)), "text": text, "label": label}


@pytest.mark.parametrize(("rule", "expected"), [
    # A: 0, 0, 1   B: 1, 0   C: 1, 1   D: 0
    ("latest", {"A": 1, "B": 0, "C": 1, "D": 0}),
    ("majority", {"A": 0, "B": 0, "C": 1, "D": 0}),   # B: a tie goes to the latest
    ("drop", {"C": 1, "D": 0}),
])
def test_conflict_rules(rule, expected):
    store = [_corr("A", 0), _corr("B", 1), _corr("C", 1), _corr("D", 0), _corr("A", 0), _corr("B", 0),
             _corr("C", 1), _corr("A", 1)]
    res = resolve(store, rule)
    assert [r.text_key for r in res] == sorted(r.text_key for r in res)
    assert {r.text: r.label for r in res if r.label is not None} == expected
    assert {r.text for r in res if r.conflict} == {"A", "B"}
    assert {r.text: r.corrections for r in res} == {"A": 3, "B": 2, "C": 2, "D": 1}


def test_queue_latest_per_text_exclusions_and_uncertainty_order():
    def j(pid, text, score, t):
        return {"id": pid, "text": text, "score": score, "threshold": 0.5, "created_at": t,
                "model_version": "1", "label": int(score >= 0.5)}

    judged = [j("a2", "文本甲！", 0.52, 2.0), j("a1", "文本甲", 0.9, 1.0),   # one text: the later one counts
              j("b", "文本乙", 0.45, 1.0), j("c", "文本丙", 0.7, 1.0), j("d", "已经改过", 0.5, 1.0),
              j("e", "评估集", 0.5, 1.0), j("f", "  ", 0.5, 1.0), j("g", "文本丁", 0.1, 1.0),
              {**j("h", None, 0.5, 1.0)}]
    cands, skipped = candidates(judged, corrected={text_key(normalise("已经改过"))},
                                leak_keys={normalise("评估集")}, max_text_chars=100)
    assert sorted(c["id"] for c in cands) == ["a2", "b", "c", "g"]
    assert skipped == {"blank_or_too_long": 1, "corrected": 1, "leakage": 1}
    rows = select(cands, size=3, random_share=1 / 3, seed=0)
    assert [r["prediction_id"] for r in rows[:2]] == ["a2", "b"]     # |0.52-0.5| < |0.45-0.5|
    assert [r["review_reason"] for r in rows] == ["uncertain", "uncertain", "random"]
    assert rows[2]["prediction_id"] in {"c", "g"}
    assert select(cands, size=3, random_share=1 / 3, seed=0) == rows  # seeded
    assert all(r["label"] == "" for r in rows)
    assert len(select(cands, size=10, random_share=0.5, seed=1)) == 4   # never more than there are
