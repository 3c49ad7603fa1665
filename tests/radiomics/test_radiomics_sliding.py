"""The sliding-window engine: incremental GLCM / GLRLM / sorted values equal freshly built kernels and references.

The numba engine updates its integer tables when one slab of the kernel leaves and one enters. These tests run
whole lines of consecutive centres (so every update path is used: slabs leaving and entering, gaps in a line,
kernels clipped by the image and by the mask) and compare with (a) every centre computed on its own, which builds
its kernel from an empty state, (b) the independent torch implementation (dense per-centre matrices) and (c)
pyradiomics on a real lung CT.
"""

from __future__ import annotations

import numpy as np
import pytest

from vent.errors import DataError
from vent.radiomics import FilterSettings, compute_voxel_features, discretise


def _blobby_case(seed: int, shape=(9, 11, 23), bins: int = 6):
    """Smooth random image (long runs and many equal neighbours) with a mask that has holes."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=shape)
    for axis in range(3):  # cheap smoothing: runs of equal grey levels become common
        noise = (noise + np.roll(noise, 1, axis) + np.roll(noise, -1, axis)) / 3.0
    image = -700.0 + 200.0 * noise
    mask = rng.random(shape) > 0.15
    grey, n_grey = discretise(image, mask, bin_count=bins)
    return image, grey, mask, n_grey


def _line_centres(shape) -> np.ndarray:
    """Whole x-lines (with a gap) through the middle, the image edges and a corner."""
    nz, ny, nx = shape
    rows = [(nz // 2, ny // 2), (0, 0), (nz - 1, ny - 1), (1, ny - 2)]
    xs = [x for x in range(nx) if not 8 <= x <= 10]  # a gap shorter than the kernel, so the box slides across it
    return np.array([(z, y, x) for z, y in rows for x in xs], dtype=np.int64)


@pytest.mark.parametrize("kernel_voxels", [3, 5, 9])
def test_sliding_equals_kernels_built_from_scratch(kernel_voxels):
    image, grey, mask, n_grey = _blobby_case(seed=kernel_voxels)
    centres = _line_centres(image.shape)
    settings = FilterSettings(kernel_voxels=kernel_voxels, dtype="float64", backend="numba", n_workers=1)
    sliding = compute_voxel_features(image, grey, mask, centres, n_grey, settings)
    single = np.stack([
        compute_voxel_features(image, grey, mask, centres[k:k + 1], n_grey, settings)[0] for k in range(len(centres))
    ])
    # integer tables depend only on the box, and features are evaluated from them in a fixed order: bit-identical
    np.testing.assert_array_equal(sliding, single)


def test_sliding_matches_torch_dense_matrices():
    """Independent implementation: every pair scattered into dense per-centre GLCMs, runs found by shifts."""
    pytest.importorskip("torch")
    image, grey, mask, n_grey = _blobby_case(seed=11, bins=8)
    centres = _line_centres(image.shape)
    kwargs = dict(kernel_voxels=5, dtype="float64")
    numba_values = compute_voxel_features(image, grey, mask, centres, n_grey, FilterSettings(backend="numba", **kwargs))
    torch_values = compute_voxel_features(image, grey, mask, centres, n_grey, FilterSettings(backend="torch", **kwargs))
    np.testing.assert_allclose(numba_values, torch_values, rtol=1e-9, atol=1e-9, equal_nan=True)


def test_unmasked_kernel_slides_like_scratch():
    image, _, _, _ = _blobby_case(seed=5)
    everywhere = np.ones(image.shape, dtype=bool)
    grey, n_grey = discretise(image, everywhere, bin_count=5)
    centres = _line_centres(image.shape)
    settings = FilterSettings(kernel_voxels=5, dtype="float64", backend="numba", masked_kernel=False)
    sliding = compute_voxel_features(image, grey, everywhere, centres, n_grey, settings)
    single = np.stack([compute_voxel_features(image, grey, everywhere, centres[k:k + 1], n_grey, settings)[0]
                       for k in range(len(centres))])
    np.testing.assert_array_equal(sliding, single)


def test_only_the_kernels_region_is_read():
    """Values far from every kernel may be NaN (only the centres' box plus the radius is copied and checked)."""
    image, grey, mask, n_grey = _blobby_case(seed=2)
    centres = np.array([[4, 5, 5], [4, 5, 6]])
    settings = FilterSettings(kernel_voxels=3, dtype="float64", backend="numba")
    reference = compute_voxel_features(image, grey, mask, centres, n_grey, settings)
    far = image.copy()
    far[:, :, 15:] = np.nan
    np.testing.assert_array_equal(compute_voxel_features(far, grey, mask, centres, n_grey, settings), reference)
    near = image.copy()
    near[4, 5, 7] = np.nan
    mask_near = mask.copy()
    mask_near[4, 5, 7] = True
    grey_near = np.where(mask_near, np.maximum(grey, 1), 0)
    with pytest.raises(DataError, match="NaN"):
        compute_voxel_features(near, grey_near, mask_near, centres, n_grey, settings)


def test_intensity_features_do_not_depend_on_the_grey_levels_order():
    """The slab's values are pre-ordered by grey level before their sort (the levels are normally a discretisation of
    the values); with levels that say nothing about the values the sort must still give the same intensity features."""
    image, grey, mask, n_grey = _blobby_case(seed=7, bins=12)
    rng = np.random.default_rng(3)
    permuted = np.where(mask, rng.permutation(np.arange(1, n_grey + 1))[np.maximum(grey, 1) - 1], 0)
    assert (permuted[mask] != grey[mask]).any()
    centres = _line_centres(image.shape)
    settings = FilterSettings(kernel_voxels=5, dtype="float64", backend="numba", n_workers=1)
    intensity = slice(0, 18)
    ordered = compute_voxel_features(image, grey, mask, centres, n_grey, settings)[:, intensity]
    scrambled = compute_voxel_features(image, permuted, mask, centres, n_grey, settings)[:, intensity]
    np.testing.assert_array_equal(scrambled, ordered)
