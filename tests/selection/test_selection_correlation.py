"""Streaming per-phase Pearson correlation against numpy.corrcoef on the pooled data."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from vent.errors import DataError
from vent.selection import PhaseCorrelation

# Exact accumulation in float64: agreement with numpy's two-pass corrcoef is limited only by rounding.
TOLERANCE = 1e-10


def _chunks(seed: int, sizes: list[int], n_phases: int = 3, n_features: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features))
    # Large offsets and different scales per feature make the naive sum-of-products formula lose digits.
    offset = rng.normal(size=n_features) * 1e4
    scale = 10.0 ** rng.uniform(-2, 3, size=n_features)
    return [
        (rng.normal(size=(n, n_phases, n_features)) @ mixing * scale + offset).astype(np.float32) for n in sizes
    ]


def _reference_per_phase(data_ntf: np.ndarray) -> np.ndarray:
    data = data_ntf.astype(np.float64)
    return np.stack([np.corrcoef(data[:, t, :], rowvar=False) for t in range(data.shape[1])])


def test_streaming_equals_numpy_corrcoef_on_pooled_data():
    chunks = _chunks(0, [1, 7, 300, 4096, 1000])
    accumulator = PhaseCorrelation()
    for chunk in chunks:
        accumulator.update(chunk)
    reference = _reference_per_phase(np.concatenate(chunks))
    np.testing.assert_allclose(accumulator.per_phase(), reference, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(accumulator.averaged(), reference.mean(axis=0), atol=TOLERANCE, rtol=0)
    assert accumulator.count == sum(len(c) for c in chunks)


def test_merge_equals_single_pass():
    chunks = _chunks(1, [500, 20, 3000, 64])
    single = PhaseCorrelation()
    for chunk in chunks:
        single.update(chunk)
    per_case = []
    for chunk in chunks:
        case = PhaseCorrelation()
        case.update(chunk)
        per_case.append(case)
    merged = PhaseCorrelation()
    for case in per_case:
        merged.merge(case)
    np.testing.assert_allclose(merged.per_phase(), single.per_phase(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(merged.mean_tf, single.mean_tf, rtol=1e-12)
    assert merged.count == single.count


def test_constant_feature_gives_zero_correlation_not_nan(caplog):
    rng = np.random.default_rng(2)
    data = rng.normal(size=(200, 2, 4))
    data[:, :, 1] = 3.25  # constant at every phase
    data[:, 0, 3] = -1.0  # constant at phase 0 only
    accumulator = PhaseCorrelation()
    with caplog.at_level(logging.WARNING, logger="vent.selection.correlation"):
        accumulator.update(data[:150])
        accumulator.update(data[150:])
        corr = accumulator.per_phase()
    assert not np.isnan(corr).any()
    np.testing.assert_array_equal(
        accumulator.constant_features(), [[False, True, False, True], [False, True, False, False]]
    )
    assert corr[0, 1, 0] == 0.0 and corr[1, 1, 1] == 1.0
    assert "constant" in caplog.text
    averaged = accumulator.averaged()
    # Feature 3 is constant at phase 0, so its average uses phase 1 only.
    phase1 = np.corrcoef(data[:, 1, [0, 2, 3]], rowvar=False)
    np.testing.assert_allclose(averaged[0, 3], phase1[0, 2], atol=TOLERANCE)
    phase0 = np.corrcoef(data[:, 0, [0, 2]], rowvar=False)
    np.testing.assert_allclose(averaged[0, 2], 0.5 * (phase0[0, 1] + phase1[0, 1]), atol=TOLERANCE)


def test_rejects_mismatched_shapes_and_nan():
    accumulator = PhaseCorrelation()
    accumulator.update(np.zeros((3, 2, 4)) + np.arange(3)[:, None, None])
    with pytest.raises(DataError, match="phases"):
        accumulator.update(np.zeros((3, 3, 4)))
    with pytest.raises(DataError, match="NaN"):
        accumulator.update(np.full((3, 2, 4), np.nan))
    with pytest.raises(DataError, match="at least 2"):
        PhaseCorrelation().per_phase()
