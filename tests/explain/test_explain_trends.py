"""Trends over the breathing cycle: the confidence band is a t-interval over patients, not over voxels."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy import stats

import vent.explain.trends
from vent.errors import ConfigError, DataError
from vent.explain import patient_confidence_band, summarise_trend


def test_band_matches_scipy_t_interval_per_phase():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(7, 5))  # 7 patients, 5 phases
    for level in (0.9, 0.95):
        mean, low, high = patient_confidence_band(means, level)
        assert mean.shape == low.shape == high.shape == (5,)
        for t in range(5):
            column = means[:, t]
            ref_low, ref_high = stats.t.interval(level, df=6, loc=column.mean(), scale=stats.sem(column))
            assert mean[t] == pytest.approx(column.mean(), abs=1e-12)
            assert (low[t], high[t]) == pytest.approx((ref_low, ref_high), abs=1e-12)


def test_band_by_hand_and_the_doctest():
    # means 1, 2, 3: mean 2, SD 1; with 2 degrees of freedom the t quantile has a closed form,
    # t_p = (2p - 1) / sqrt(2 p (1 - p)), so t_{0.975, 2} = 0.95 / sqrt(0.04875) = 4.3027 -> 2 -/+ 4.3027 / sqrt(3)
    mean, low, high = patient_confidence_band(np.array([1.0, 2.0, 3.0]))
    half = 0.95 / np.sqrt(2 * 0.975 * 0.025) / np.sqrt(3)
    assert (float(mean), float(low), float(high)) == pytest.approx((2.0, 2.0 - half, 2.0 + half), abs=1e-12)
    assert doctest.testmod(vent.explain.trends).failed == 0


def test_one_patient_has_no_band():
    mean, low, high = patient_confidence_band(np.array([[1.0, 4.0]]))
    np.testing.assert_array_equal(mean, [1.0, 4.0])
    assert np.isnan(low).all() and np.isnan(high).all()


def test_band_rejects_bad_input():
    with pytest.raises(ConfigError, match="level"):
        patient_confidence_band(np.ones(3), level=1.0)
    with pytest.raises(DataError, match="at least one patient"):
        patient_confidence_band(np.ones((0, 4)))


def test_summary_weighs_patients_not_voxels():
    # Patient a: 100 voxels around 0; patient b: 2 voxels at 10; c: 3 voxels at 5. Two phases.
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0, 1, (100, 2)), np.full((2, 2), 10.0), np.full((3, 2), 5.0)])
    cases = np.array(["a"] * 100 + ["b"] * 2 + ["c"] * 3)
    order = rng.permutation(len(values))  # voxel order does not matter
    trend = summarise_trend(values[order], cases[order])
    assert trend.cases == ["a", "b", "c"] and trend.case_n.tolist() == [100, 2, 3] and trend.n_voxels == 105
    case_means = np.stack([values[:100].mean(0), [10.0, 10.0], [5.0, 5.0]])
    np.testing.assert_allclose(trend.case_mean, case_means)
    np.testing.assert_allclose(trend.case_sd[1:], 0.0)
    np.testing.assert_allclose(trend.case_sd[0], values[:100].std(0))
    np.testing.assert_allclose(trend.mean, case_means.mean(0))  # not the voxel mean (~0.6)
    np.testing.assert_allclose(trend.sd_patients, case_means.std(0, ddof=1))
    np.testing.assert_allclose(trend.sd_voxels, values.std(0))
    mean, low, high = patient_confidence_band(case_means)
    np.testing.assert_allclose((trend.ci_low, trend.ci_high), (low, high))
    # the naive band over voxels would be far narrower than the band over patients
    naive_half = 1.96 * values.std(0) / np.sqrt(len(values))
    assert (trend.ci_high - trend.mean > 5 * naive_half).all()


def test_summary_of_one_patient_and_bad_input():
    trend = summarise_trend(np.ones((4, 3)), np.array(["a"] * 4))
    assert np.isnan(trend.ci_low).all() and np.isnan(trend.sd_patients).all()
    np.testing.assert_array_equal(trend.mean, 1.0)
    with pytest.raises(DataError, match="one case id per voxel"):
        summarise_trend(np.ones((4, 3)), np.array(["a"] * 3))
