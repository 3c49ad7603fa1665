"""Tests of vent.metrics against scikit-learn and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score, roc_curve

from vent.errors import DataError
from vent.metrics import (
    DICE_GRID,
    accuracy,
    auc_roc,
    best_dice_threshold,
    choose_threshold,
    defect_fraction_threshold,
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


def test_defect_fraction_threshold_is_the_analytic_quantile() -> None:
    # 10 voxels, 3 defects (30%): the threshold is the 3rd largest score, so exactly 3 voxels are called defect
    scores = np.array([0.05, 0.9, 0.2, 0.41, 0.3, 0.8, 0.1, 0.35, 0.15, 0.25])
    labels = np.array([0, 1, 0, 0, 0, 1, 0, 1, 0, 0])
    threshold = defect_fraction_threshold([labels], [scores])
    assert threshold == 0.41
    assert (scores >= threshold).sum() == 3
    # pooled over two patients: f = 4 / 20, the 4th largest of all 20 scores
    second = np.linspace(0.0, 0.95, 10)
    threshold = defect_fraction_threshold([labels, np.eye(10, dtype=int)[0]], [scores, second])
    assert threshold == np.sort(np.r_[scores, second])[::-1][3]
    with pytest.raises(DataError, match="both classes"):
        defect_fraction_threshold([np.zeros(5, int)], [np.linspace(0, 1, 5)])


def test_best_dice_threshold_matches_the_analytic_answer() -> None:
    # healthy voxels score 0.2 or 0.5, defects 0.6 or 0.8: every t in (0.5, 0.6] separates the classes (Dice 1);
    # the smallest such grid value is 0.51
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.2, 0.5, 0.2, 0.5, 0.6, 0.8])
    assert best_dice_threshold([labels], [scores]) == pytest.approx(0.51)
    # a second patient with a healthy voxel at 0.55: only t in (0.55, 0.6] gives Dice 1 for both, smallest 0.56
    b_labels, b_scores = np.array([0, 1]), np.array([0.55, 0.95])
    assert best_dice_threshold([labels, b_labels], [scores, b_scores]) == pytest.approx(0.56)
    assert choose_threshold("val_dice", [labels, b_labels], [scores, b_scores]).figures["mean_dice"] == 1.0
    assert len(DICE_GRID) == 99 and DICE_GRID[0] == 0.01 and DICE_GRID[-1] == 0.99


def test_choose_threshold_rules_on_validation_arrays() -> None:
    rng = np.random.default_rng(0)
    val_labels = (rng.random(2000) < 0.3).astype(int)
    val_scores = np.clip(0.2 + 0.3 * val_labels + rng.normal(0, 0.05, 2000), 0, 1)
    # test patients with a very different distribution must not move the threshold
    test_labels = (rng.random(2000) < 0.7).astype(int)
    test_scores = np.clip(0.7 + 0.2 * test_labels + rng.normal(0, 0.05, 2000), 0, 1)
    for rule in ("val_defect_fraction", "val_dice"):
        choice = choose_threshold(rule, [val_labels], [val_scores])
        assert choice.rule == rule
        assert 0.3 < choice.threshold < 0.5  # between the validation classes
        assert choice.figures["mean_dice"] > 0.95
    fraction = choose_threshold("val_defect_fraction", [val_labels], [val_scores])
    pooled = choose_threshold("val_defect_fraction", [val_labels, test_labels], [val_scores, test_scores])
    assert pooled.threshold > fraction.threshold + 0.1  # it uses exactly the arrays given: pass validation only
    assert fraction.figures["predicted_defect_fraction"] == pytest.approx(fraction.figures["true_defect_fraction"])
    fixed = choose_threshold(0.5, [val_labels], [val_scores])
    assert fixed.threshold == 0.5 and fixed.rule == "fixed" and fixed.figures["n_voxels"] == 2000
    with pytest.raises(ValueError, match="unknown threshold rule"):
        choose_threshold("test_dice", [val_labels], [val_scores])
    with pytest.raises(DataError, match="one label and one score"):
        choose_threshold("val_dice", [], [])


def test_a_fixed_half_threshold_under_calls_and_the_fraction_rule_does_not() -> None:
    # calibrated-looking but shifted probabilities: defects (30%) mostly score 0.35-0.5, below a fixed 0.5
    rng = np.random.default_rng(1)
    labels = (rng.random(5000) < 0.3).astype(int)
    scores = np.clip(0.25 + 0.2 * labels + rng.normal(0, 0.04, 5000), 0, 1)
    fixed = patient_metrics(labels, scores, threshold=0.5)
    chosen = choose_threshold("val_defect_fraction", [labels], [scores]).threshold
    matched = patient_metrics(labels, scores, threshold=chosen)
    assert fixed["sensitivity"] < 0.2 and matched["sensitivity"] > 0.9


def test_vampire_metrics_equal_scipy_spearman_and_dice_of_the_quantile_regions() -> None:
    from scipy import stats as scipy_stats

    from vent.metrics import vampire_metrics

    rng = np.random.default_rng(7)
    refvi = rng.gamma(2.0, 1.0, 1000)
    estimate = refvi + rng.normal(0, 1.0, 1000)
    values = vampire_metrics(estimate, refvi, 0.3)
    assert values["r_s"] == pytest.approx(scipy_stats.spearmanr(estimate, refvi).statistic, rel=1e-12)
    low = lambda v: v <= np.sort(v)[299]  # noqa: E731  the 300 lowest of 1000 distinct values
    high = lambda v: v >= np.sort(v)[700]  # noqa: E731
    for name, region in (("dsc_low", low), ("dsc_high", high)):
        a, b = region(refvi), region(estimate)
        assert a.sum() == b.sum() == 300
        assert values[name] == pytest.approx(2 * (a & b).sum() / 600, abs=1e-12)
    perfect = vampire_metrics(refvi * 3 + 1, refvi, 0.3)
    assert perfect == {"r_s": pytest.approx(1.0), "dsc_low": 1.0, "dsc_high": 1.0}
    assert math.isnan(vampire_metrics(np.ones(1000), refvi, 0.3)["r_s"])
