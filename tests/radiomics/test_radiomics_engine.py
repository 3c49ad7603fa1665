"""Engine invariance (block size, workers, backend), edge cases and the features pyradiomics lacks."""

from __future__ import annotations

import numpy as np
import pytest

from vent.errors import ConfigError, DataError
from vent.radiomics import (
    FEATURE_IDS,
    FilterSettings,
    compute_roi_features,
    compute_voxel_features,
    discretise,
    kernel_voxels_from_mm,
)


def _synthetic(seed: int = 3, shape=(12, 14, 16)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(-700.0, 150.0, size=shape)
    zz, yy, xx = np.indices(shape)
    mask = ((zz - 6) ** 2 / 30 + (yy - 7) ** 2 / 40 + (xx - 8) ** 2 / 50) < 1.0
    return image, mask


def _column(values: np.ndarray, fid: str) -> np.ndarray:
    return values[:, FEATURE_IDS.index(fid)]


@pytest.fixture(scope="module")
def synthetic_case():
    image, mask = _synthetic()
    grey, n_grey = discretise(image, mask, bin_count=16)
    centres = np.argwhere(np.ones(image.shape, bool))[::7]  # inside and outside the mask
    return image, grey, mask, centres, n_grey


def test_results_do_not_depend_on_block_size_or_workers(synthetic_case):
    image, grey, mask, centres, n_grey = synthetic_case
    base = compute_voxel_features(image, grey, mask, centres, n_grey,
                                  FilterSettings(kernel_voxels=5, dtype="float64", backend="numba", block_size=10_000,
                                                 n_workers=1))
    for block_size, workers in ((7, 2), (64, 1), (1000, 2)):
        other = compute_voxel_features(image, grey, mask, centres, n_grey,
                                       FilterSettings(kernel_voxels=5, dtype="float64", backend="numba",
                                                      block_size=block_size, n_workers=workers))
        np.testing.assert_array_equal(other, base)  # bit-identical: the state depends only on the box


def test_centre_order_does_not_matter(synthetic_case):
    image, grey, mask, centres, n_grey = synthetic_case
    settings = FilterSettings(kernel_voxels=5, dtype="float64", backend="numba")
    base = compute_voxel_features(image, grey, mask, centres, n_grey, settings)
    perm = np.random.default_rng(1).permutation(len(centres))
    permuted = compute_voxel_features(image, grey, mask, centres[perm], n_grey, settings)
    np.testing.assert_array_equal(permuted, base[perm])


def test_torch_backend_matches_numba_on_cpu(synthetic_case):
    pytest.importorskip("torch")
    image, grey, mask, centres, n_grey = synthetic_case
    kwargs = dict(kernel_voxels=5, dtype="float64")
    numba_values = compute_voxel_features(image, grey, mask, centres[::3], n_grey,
                                          FilterSettings(backend="numba", **kwargs))
    torch_values = compute_voxel_features(image, grey, mask, centres[::3], n_grey,
                                          FilterSettings(backend="torch", **kwargs))
    np.testing.assert_allclose(torch_values, numba_values, rtol=1e-9, atol=1e-9, equal_nan=True)


def test_single_kernel_covering_roi_equals_roi_mode(synthetic_case):
    image, grey, mask, _, n_grey = synthetic_case
    roi = compute_roi_features(image, grey, mask, n_grey)
    centre = np.array([[6, 7, 8]])
    voxel = compute_voxel_features(image, grey, mask, centre, n_grey,
                                   FilterSettings(kernel_voxels=41, dtype="float64", backend="numba"))[0]
    np.testing.assert_allclose(voxel, [roi[f] for f in FEATURE_IDS], rtol=1e-12)


def test_intensity_features_pyradiomics_lacks_match_numpy(synthetic_case):
    """IBSI N72L (mean |x - median|), 7TET (sigma / mu), 9S40 ((P75 - P25) / (P75 + P25)) against numpy."""
    image, grey, mask, _, n_grey = synthetic_case
    roi = compute_roi_features(image, grey, mask, n_grey)
    x = image[mask]
    p25, p75 = np.percentile(x, [25, 75])
    assert roi["intensity_median_absolute_deviation"] == pytest.approx(np.mean(np.abs(x - np.median(x))), rel=1e-12)
    assert roi["intensity_coefficient_of_variation"] == pytest.approx(np.std(x) / np.mean(x), rel=1e-12)
    assert roi["intensity_quartile_coefficient_of_dispersion"] == pytest.approx((p75 - p25) / (p75 + p25), rel=1e-12)


def test_constant_kernel_gives_defined_values():
    image = np.full((5, 5, 5), 7.0)
    mask = np.ones(image.shape, bool)
    grey = np.ones(image.shape, np.int32)
    values = compute_voxel_features(image, grey, mask, np.array([[2, 2, 2]]), 1,
                                    FilterSettings(kernel_voxels=3, dtype="float64", backend="numba"))[0]
    assert not np.isnan(values).any()
    assert _column(values[None], "intensity_variance")[0] == 0.0
    assert _column(values[None], "intensity_skewness")[0] == 0.0
    assert _column(values[None], "intensity_kurtosis")[0] == 0.0
    assert _column(values[None], "glcm_joint_entropy")[0] == 0.0
    assert _column(values[None], "glcm_joint_maximum")[0] == 1.0
    assert _column(values[None], "glcm_correlation")[0] == 1.0  # pyradiomics convention for sigma = 0
    assert _column(values[None], "glcm_information_correlation_2")[0] == 0.0
    assert _column(values[None], "glrlm_grey_level_non_uniformity_normalised")[0] == 1.0  # one grey level
    assert _column(values[None], "glrlm_low_grey_level_run_emphasis")[0] == 1.0  # grey level 1


def test_single_voxel_kernel_and_centre_outside_mask():
    image, mask = _synthetic()
    grey, n_grey = discretise(image, mask, bin_count=8)
    isolated = np.zeros_like(mask)
    isolated[2, 2, 2] = True
    values = compute_voxel_features(image, np.where(isolated, 1, 0), isolated, np.array([[2, 2, 2], [9, 9, 9]]), 1,
                                    FilterSettings(kernel_voxels=3, dtype="float64", backend="numba"))
    # one voxel: intensity defined, no GLCM pair at all -> NaN; one run of length 1 per direction
    assert _column(values, "intensity_mean")[0] == image[2, 2, 2]
    assert np.isnan(_column(values, "glcm_contrast")[0])
    assert _column(values, "glrlm_short_run_emphasis")[0] == 1.0
    # centre far from the mask: empty kernel -> NaN everywhere
    assert np.isnan(values[1]).all()


def test_empty_directions_are_left_out_of_the_average():
    """A 1-voxel-thick plane (z) has no pair along the 9 directions with dz != 0: the average uses the 4 others."""
    grey = np.zeros((3, 4, 4), np.int32)
    grey[1] = np.array([[1, 2, 1, 2], [2, 1, 2, 1], [1, 2, 1, 2], [2, 1, 2, 1]])
    mask = grey > 0
    image = grey.astype(float)
    values = compute_voxel_features(image, grey, mask, np.array([[1, 1, 1]]), 2,
                                    FilterSettings(kernel_voxels=9, dtype="float64", backend="numba"))
    # directions in the plane: (0,0,1) and (0,1,0) always differ (contrast 1), diagonals always equal (contrast 0)
    assert _column(values, "glcm_contrast")[0] == pytest.approx(0.5, rel=1e-12)


def test_bad_inputs_raise_clear_errors():
    image, mask = _synthetic()
    grey, n_grey = discretise(image, mask, bin_count=8)
    with pytest.raises(DataError, match="outside the image"):
        compute_voxel_features(image, grey, mask, np.array([[99, 0, 0]]), n_grey, FilterSettings())
    with pytest.raises(ConfigError, match="Did you mean"):
        compute_voxel_features(image, grey, mask, np.array([[1, 1, 1]]), n_grey, FilterSettings(),
                               feature_ids=["glcm_joint_entropi"])
    with pytest.raises(ConfigError, match="odd"):
        FilterSettings(kernel_voxels=12)
    with pytest.raises(DataError, match="empty"):
        discretise(image, np.zeros_like(mask))


def test_kernel_voxels_from_mm():
    assert kernel_voxels_from_mm(26.0, 2.0) == 13
    assert kernel_voxels_from_mm(26.0, 1.0) == 27
    assert kernel_voxels_from_mm(1.0, 2.0) == 1
    with pytest.raises(ConfigError):
        kernel_voxels_from_mm(0.0, 2.0)


def test_discretise_matches_numpy_histogram_binning():
    image, mask = _synthetic()
    grey, n_grey = discretise(image, mask, bin_count=64)
    values = image[mask]
    edges = np.histogram(values, bins=64)[1]
    edges[-1] += 1
    np.testing.assert_array_equal(grey[mask], np.digitize(values, edges))
    assert n_grey == 64 and grey[~mask].max() == 0
    case_grey, case_n = discretise(image, mask, bin_count=64, value_range=(-1500.0, 500.0))
    assert case_n == 64 and case_grey[mask].max() < 64
