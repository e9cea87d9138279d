"""chintox.metrics against scikit-learn on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from chintox.metrics import (
    binary_metrics,
    bootstrap_ci,
    label_metrics,
    roc_auc,
    rounded,
    slice_metrics,
    throughput,
    tune_threshold,
)

Y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1])
S = np.array([0.1, 0.8, 0.55, 0.5, 0.5, 0.3, 0.7, 0.9, 0.2, 0.4,
              0.65, 0.5, 0.05, 0.6, 0.95, 0.35, 0.45, 0.5, 0.15, 0.75])  # ties at 0.5 on both classes


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.72])
def test_binary_metrics_match_sklearn(threshold):
    got = binary_metrics(Y, S, threshold)
    pred = (S >= threshold).astype(int)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(Y, pred))
    assert got["precision"] == pytest.approx(skm.precision_score(Y, pred, zero_division=0))
    assert got["recall"] == pytest.approx(skm.recall_score(Y, pred, zero_division=0))
    assert got["f1"] == pytest.approx(skm.f1_score(Y, pred, zero_division=0))
    assert got["auc"] == pytest.approx(skm.roc_auc_score(Y, S))
    assert got["auc_hard"] == pytest.approx(skm.roc_auc_score(Y, pred))


def test_roc_auc_ties_and_random_inputs_match_sklearn():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = rng.integers(0, 2, 300)
        s = np.round(rng.random(300), 1)  # many ties
        assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_degenerate_inputs():
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.3, 0.9]))
    m = label_metrics([0, 0, 0], [0, 0, 0])  # no positives predicted or present
    assert m == {"accuracy": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert rounded({"a": float("nan"), "b": np.float32(0.123456)}) == {"a": None, "b": 0.1235}


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1)
    a = bootstrap_ci(y, s, 0.5, n_boot=200, seed=7)
    b = bootstrap_ci(y, s, 0.5, n_boot=200, seed=7)
    c = bootstrap_ci(y, s, 0.5, n_boot=200, seed=8)
    assert a == b and a != c
    point = binary_metrics(y, s, 0.5)
    for k, (lo, hi) in a.items():
        assert lo <= point[k] <= hi, k
        assert hi - lo < 0.2, k


def test_tune_threshold_maximises_f1():
    t = tune_threshold(Y, S, "f1")
    best = max(skm.f1_score(Y, (S >= c).astype(int)) for c in np.unique(S))
    assert skm.f1_score(Y, (S >= t).astype(int)) == pytest.approx(best)


def test_slices_use_names_and_match_label_metrics():
    recs = [{"label": int(y), "fine_grained_label": (i % 4) if y else 0, "topic": "race" if i % 2 else "region"}
            for i, y in enumerate(Y)]
    out = slice_metrics(recs, S, 0.5, ["topic", "fine_grained_label", "absent_key"])
    assert set(out) == {"topic", "fine_grained_label"}
    assert {"other", "attack_individual", "attack_group", "anti_bias"} >= set(out["fine_grained_label"])
    idx = [i for i, r in enumerate(recs) if r["topic"] == "race"]
    race = out["topic"]["race"]
    assert race["n"] == len(idx)
    assert race["f1"] == pytest.approx(skm.f1_score(Y[idx], (S[idx] >= 0.5).astype(int), zero_division=0))


def test_throughput_excludes_startup():
    t = throughput(1000, 4.0, 30.0)
    assert t["samples_per_s"] == 250.0 and t["startup_seconds"] == 30.0
