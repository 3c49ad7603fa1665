"""Tests of vent.metrics against scikit-learn and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score, roc_curve

from vent.errors import DataError
from vent.metrics import (
    accuracy,
    auc_roc,
    dice,
    format_cell,
    patient_metrics,
    pooled_roc,
    sensitivity,
    summarise,
    wilcoxon_vs_reference,
)

TOLERANCE = 1e-12


def _patient(seed: int, n: int = 1000, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = (rng.random(n) < 0.3).astype(np.uint8)
    score = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y_true)))
    if ties:
        score = np.round(score, 1)  # many tied scores
    return y_true, score


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_binary_metrics_agree_with_scikit_learn(seed: int, threshold: float) -> None:
    y_true, score = _patient(seed)
    y_pred = (score >= threshold).astype(int)
    assert dice(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred), abs=TOLERANCE)
    assert sensitivity(y_true, y_pred) == pytest.approx(recall_score(y_true, y_pred), abs=TOLERANCE)
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred), abs=TOLERANCE)
    metrics = patient_metrics(y_true, score, threshold=threshold)
    assert set(metrics) == {"dice", "auc", "sensitivity", "accuracy"}
    assert metrics["dice"] == pytest.approx(f1_score(y_true, y_pred), abs=TOLERANCE)
    assert metrics["auc"] == pytest.approx(roc_auc_score(y_true, score), abs=TOLERANCE)


@pytest.mark.parametrize("ties", [False, True])
def test_auc_agrees_with_scikit_learn_including_ties(ties: bool) -> None:
    y_true, score = _patient(5, ties=ties)
    assert auc_roc(y_true, score) == pytest.approx(roc_auc_score(y_true, score), abs=TOLERANCE)


def test_undefined_metrics_are_nan_not_a_guess() -> None:
    assert math.isnan(auc_roc([1, 1, 1], [0.2, 0.5, 0.9]))
    assert math.isnan(sensitivity([0, 0, 0], [0, 1, 0]))
    assert math.isnan(dice([0, 0], [0, 0]))
    assert dice([1, 0], [0, 0]) == 0.0
    with pytest.raises(DataError, match="0/1"):
        dice([0, 2], [0, 1])
    with pytest.raises(DataError, match="same number"):
        accuracy([0, 1], [0, 1, 1])
    with pytest.raises(DataError, match="NaN"):
        auc_roc([0, 1], [0.1, float("nan")])


def test_summarise_ignores_and_counts_nan() -> None:
    mean, lo, hi = summarise([0.5, float("nan"), 0.7, 0.9])
    assert (mean, lo, hi) == pytest.approx((0.7, 0.5, 0.9), abs=TOLERANCE)
    summary = summarise({"a": 0.5, "b": float("nan")})
    assert summary.n_nan == 1 and summary.n == 2 and summary.mean == 0.5
    assert all(math.isnan(v) for v in summarise([float("nan")]))


def test_wilcoxon_agrees_with_scipy_and_pairs_by_case() -> None:
    rng = np.random.default_rng(0)
    cases = [f"case{i:02d}" for i in range(20)]
    reference = {c: float(v) for c, v in zip(cases, rng.normal(0.78, 0.05, 20))}
    other = {c: reference[c] - float(d) for c, d in zip(cases, rng.normal(0.03, 0.02, 20))}
    differences = np.array([other[c] - reference[c] for c in cases])
    expected = stats.wilcoxon(differences, alternative="two-sided").pvalue
    shuffled_other = dict(reversed(list(other.items())))  # pairing must be by case id, not by order
    assert wilcoxon_vs_reference(reference, shuffled_other) == pytest.approx(expected, rel=1e-12)


def test_wilcoxon_exact_small_sample_and_edge_cases() -> None:
    # n = 5, all differences positive: exact two-sided p = 2 / 2^5 = 0.0625 (cannot reach 0.01 with 5 folds).
    reference = {f"c{i}": 0.5 for i in range(5)}
    better = {f"c{i}": 0.5 + 0.01 * (i + 1) for i in range(5)}
    assert wilcoxon_vs_reference(reference, better) == pytest.approx(0.0625, abs=1e-12)
    assert wilcoxon_vs_reference(reference, dict(reference)) == 1.0
    assert math.isnan(wilcoxon_vs_reference({"a": 0.1}, {"a": 0.2}))
    assert math.isnan(wilcoxon_vs_reference({"a": 0.1, "b": float("nan")}, {"a": 0.2, "b": 0.3}))
    with pytest.raises(DataError, match="only one"):
        wilcoxon_vs_reference({"a": 0.1, "b": 0.2}, {"a": 0.1, "c": 0.2})


def test_format_cell_matches_the_table_style() -> None:
    assert format_cell(0.781, 0.742, 0.789) == "0.78(0.74-0.79)"
    assert format_cell(0.781, 0.742, 0.789, p=0.004) == "0.78(0.74-0.79)*"
    assert format_cell(0.781, 0.742, 0.789, p=0.01) == "0.78(0.74-0.79)"
    assert format_cell(0.781, 0.742, 0.789, p=0.03, alpha=0.05) == "0.78(0.74-0.79)*"
    assert format_cell(float("nan"), float("nan"), float("nan")) == "n/a"


def test_pooled_roc_agrees_with_scikit_learn() -> None:
    patients = [_patient(seed, n=400, ties=(seed == 1)) for seed in range(3)]
    labels = [p[0] for p in patients]
    scores = [p[1] for p in patients]
    fpr, tpr, auc = pooled_roc(labels, scores)
    y_all, s_all = np.concatenate(labels), np.concatenate(scores)
    expected_fpr, expected_tpr, _ = roc_curve(y_all, s_all, drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr, atol=TOLERANCE)
    np.testing.assert_allclose(tpr, expected_tpr, atol=TOLERANCE)
    assert auc == pytest.approx(roc_auc_score(y_all, s_all), abs=1e-12)
    with pytest.raises(DataError, match="both"):
        pooled_roc([np.zeros(3)], [np.ones(3)])
