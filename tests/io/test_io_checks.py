"""Voxel checks: plausible HU for CT and the lung-mask rule, on arrays (and on a real lung CT when it is present)."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vent.errors import DataError
from vent.io.checks import MAX_MASK_FRACTION, check_ct_intensities, check_lung_mask

REAL_CT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lung_ct" / "lung1-001"


def _chest(seed=0):
    """A (20, 40, 40) chest: air -1000, a soft-tissue body at 40 HU, two lungs at -850 HU, a few bone voxels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.arange(20), np.arange(40), np.arange(40), indexing="ij")
    body = ((x - 20) / 18) ** 2 + ((y - 20) / 14) ** 2 <= 1
    lung = body & ((((x - 12) / 6) ** 2 + ((y - 20) / 9) ** 2 <= 1) | (((x - 28) / 6) ** 2 + ((y - 20) / 9) ** 2 <= 1))
    ct = np.where(body, 40.0, -1000.0) + rng.normal(0, 10, body.shape)
    ct[lung] = -850 + rng.normal(0, 30, int(lung.sum()))
    ct[(y == 5) & (x == 20)] = 1200.0
    left = lung & (x < 20)
    return ct.astype(np.int16), lung.astype(np.uint8), (lung.astype(np.uint8) + left.astype(np.uint8))


def test_plausible_chest_passes():
    ct, lung, _ = _chest()
    check_ct_intensities(ct, Path("ct.mha"), lung)
    check_ct_intensities(ct, Path("ct.mha"))


def test_padding_outside_the_field_of_view_is_ignored():
    ct, lung, _ = _chest()
    ct[:, :8, :8] = -3024
    check_ct_intensities(ct, Path("ct.mha"), lung)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ct: np.full_like(ct, 5000), "99th percentile is 5000 HU"),
        (lambda ct: ct + 1024, "median inside its lung mask is 1"),  # no rescale intercept: air at 0
        (lambda ct: ct - 1500, "1st percentile"),
        (lambda ct: np.full_like(ct, -3024), "single value"),
    ],
)
def test_implausible_hu_is_named(change, message):
    ct, lung, _ = _chest()
    with pytest.raises(DataError, match=message) as error:
        check_ct_intensities(change(ct), Path("Subject_01/CT/PhaseImage_01.mha"), lung)
    assert "PhaseImage_01.mha" in str(error.value) and "data.exclude" in str(error.value)


def test_binary_and_left_right_masks_are_accepted():
    _, lung, labels = _chest()
    assert check_lung_mask(lung, Path("m.mha")) is None
    assert check_lung_mask(lung.astype(np.float32), Path("m.mha")) is None
    warning = check_lung_mask(labels, Path("m.mha"))
    assert "m.mha" in warning and "label > 0" in warning


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda lung: (np.arange(lung.size).reshape(lung.shape) % 6).astype(np.uint8), "values 0, 1, 2, 3, 4, 5"),
        (lambda lung: lung * 0.5, "values 0, 0.5"),
        (lambda lung: lung.astype(np.int16) * 255, "values 0, 255"),
        (lambda lung: 1 - lung, "covers"),
        (lambda lung: lung * 0, "is empty"),
    ],
)
def test_bad_masks_are_named(make, message):
    _, lung, _ = _chest()
    with pytest.raises(DataError, match=message) as error:
        check_lung_mask(make(lung), Path("Subject_01/CT/PhaseMask_02.mha"))
    assert "PhaseMask_02.mha" in str(error.value)


def test_mask_fraction_bound():
    mask = np.zeros(100, np.uint8)
    mask[: int(MAX_MASK_FRACTION * 100)] = 1
    assert check_lung_mask(mask, Path("m.mha")) is None


@pytest.mark.skipif(not REAL_CT.is_dir(), reason="the shared real lung CT is not present")
def test_real_lung_ct_passes():
    """NSCLC-Radiomics LUNG1-001 with its left/right lung masks as labels 1/2 (the bounds' reference)."""
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL_CT / "LUNG1-001_ct.nii.gz")))
    left = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL_CT / "LUNG1-001_mask_Lung-Left.nii.gz"))) > 0
    right = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL_CT / "LUNG1-001_mask_Lung-Right.nii.gz"))) > 0
    labels = left.astype(np.uint8) + 2 * right.astype(np.uint8)
    assert check_lung_mask(labels, Path("lungs.nii.gz")) is not None
    assert check_lung_mask(left.astype(np.uint8), Path("left.nii.gz")) is None
    check_ct_intensities(ct, Path("ct.nii.gz"), labels)
    with pytest.raises(DataError, match="median inside its lung mask"):
        check_ct_intensities(ct + 1024, Path("ct.nii.gz"), labels)
