"""Stratified voxel sample for explanation."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from vent.errors import ConfigError, DataError
from vent.explain import stratified_voxel_sample


def _labels() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "case_a": (rng.random(5000) < 0.2).astype(np.uint8),
        "case_b": (rng.random(3000) < 0.5).astype(np.uint8),
        "case_small": np.array([0, 0, 0, 0, 1, 0, 0], dtype=np.uint8),
    }


def test_per_class_counts_sorted_and_deterministic(caplog):
    labels = _labels()
    with caplog.at_level(logging.WARNING, logger="vent.explain.sampling"):
        sample = stratified_voxel_sample(labels, n_per_class_per_case=100, seed=0)
    assert list(sample) == list(labels)
    for case in ("case_a", "case_b"):
        index = sample[case]
        assert np.all(np.diff(index) > 0)
        assert np.bincount(labels[case][index], minlength=2).tolist() == [100, 100]
    # Too few voxels of a class: all of them, with a warning.
    np.testing.assert_array_equal(sample["case_small"], np.arange(7))
    assert "case_small" in caplog.text
    again = stratified_voxel_sample(labels, n_per_class_per_case=100, seed=0)
    assert all(np.array_equal(sample[c], again[c]) for c in labels)
    other_seed = stratified_voxel_sample(labels, n_per_class_per_case=100, seed=1)
    assert not np.array_equal(sample["case_a"], other_seed["case_a"])


def test_a_case_sample_does_not_depend_on_the_other_cases():
    labels = _labels()
    together = stratified_voxel_sample(labels, 50, seed=3)
    alone = stratified_voxel_sample({"case_b": labels["case_b"]}, 50, seed=3)
    np.testing.assert_array_equal(together["case_b"], alone["case_b"])


def test_bad_arguments():
    with pytest.raises(ConfigError):
        stratified_voxel_sample(_labels(), 0, seed=0)
    with pytest.raises(DataError, match="case_x"):
        stratified_voxel_sample({"case_x": np.array([0, 2])}, 1, seed=0)
