"""The optimised numba engine gives the previous engine's values on a real lung CT patch (issue 12, item 3).

``reference/lung1_001_patch_features.npz`` holds the 56 features (float64) that the engine of commit e8e3851 (before the
real-CT speed work: GLCM marginals updated per pair, four passes for the intensity sums) computed for the centres
below, with one worker. The optimisation keeps every table an integer count that depends on the kernel box alone
and keeps the order of every float sum (cells skipped only where they are 0, the robust sums over the index range
that the old per-value test selected), so the values came out bit-identical. The test allows a relative 1e-12
(absolute 1e-12 near 0) so that a libm rounding log2 / exp / sqrt differently on another machine does not fail it;
that is still 5 orders of magnitude below the float32 rounding (6e-8) of the stored features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vent.radiomics import FilterSettings, compute_voxel_features, discretise

REFERENCE = Path(__file__).parent / "reference" / "lung1_001_patch_features.npz"


@pytest.fixture(scope="module")
def real_ct_patch(shared_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """LUNG1-001's left lung, 20 slices (3 mm), block-averaged 2 x 2 in-plane (~2 mm): image, grey, mask, centres.

    Centres: whole x-lines (80 voxels) at 3 depths (the two end slices, clipped by the image, and the middle) and 3
    rows, so kernels slide through lung, the lung edge, outside the lung (kernels part- or fully empty) and the
    image edge.
    """
    import SimpleITK as sitk

    folder = shared_data / "lung_ct" / "lung1-001"
    if not folder.exists():
        pytest.skip(f"reference data {folder} is absent (expected the project's ../shared/data checkout)")
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "LUNG1-001_ct.nii.gz"))).astype(np.float64)
    lung = (sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "LUNG1-001_mask_Lung-Left.nii.gz"))) > 0) * 1.0
    box = (slice(57, 77), slice(150, 390), slice(250, 410))

    def average(volume: np.ndarray) -> np.ndarray:
        v = volume[box]
        return v.reshape(v.shape[0], v.shape[1] // 2, 2, v.shape[2] // 2, 2).mean(axis=(2, 4))

    image, mask = average(ct), average(lung) >= 0.5
    grey, n_grey = discretise(image, mask, bin_count=64)
    centres = np.array([(z, y, x) for z in (0, 10, 19) for y in (30, 60, 90) for x in range(80)])
    return image, grey, mask, centres, n_grey


def test_optimised_engine_gives_the_previous_values_on_real_ct(real_ct_patch):
    image, grey, mask, centres, n_grey = real_ct_patch
    settings = FilterSettings(kernel_voxels=13, bin_count=64, dtype="float64", backend="numba", n_workers=1)
    ours = compute_voxel_features(image, grey, mask, centres, n_grey, settings)
    with np.load(REFERENCE) as data:
        previous = data["features"]
    assert previous.shape == ours.shape == (720, 56)
    assert np.isfinite(previous).all(axis=1).sum() > 400  # most kernels hold lung; fully empty ones are NaN rows
    np.testing.assert_allclose(ours, previous, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_two_workers_and_small_blocks_give_the_same_values_on_real_ct(real_ct_patch):
    """Lines split across threads and blocks: the integer state depends on the box only, so values are equal."""
    image, grey, mask, centres, n_grey = real_ct_patch
    one = FilterSettings(kernel_voxels=13, bin_count=64, dtype="float64", backend="numba", n_workers=1)
    two = FilterSettings(kernel_voxels=13, bin_count=64, dtype="float64", backend="numba", n_workers=2,
                         block_size=97)
    np.testing.assert_array_equal(compute_voxel_features(image, grey, mask, centres, n_grey, two),
                                  compute_voxel_features(image, grey, mask, centres, n_grey, one))
