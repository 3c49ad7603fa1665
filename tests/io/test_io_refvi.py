"""RefVI resampling without an interpolation rim (vent.io.refvi).

Phantom: a uniformly ventilated spherical lung (radius 60 mm) on a 4 mm RefVI grid with its own origin, values
100 +/- 10 (iid Gaussian) inside VentMask and 0 outside. Every region of this lung ventilates alike, so a sound ground
truth puts as many of the lowest-30% "defects" at the border as inside. Tolerance: 0.08 on the difference of the two
defect fractions; the remaining difference is the higher variance of border voxels, which average fewer RefVI voxels.
"""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from vent.groundtruth import derive_defects
from vent.io.images import Grid, resample_to_grid
from vent.io.refvi import resample_refvi


def _sphere_image(spacing, size, origin, radius_mm, centre_mm, values=None):
    image = sitk.Image([size] * 3, sitk.sitkFloat32)
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin(origin)
    idx = np.indices((size,) * 3).astype(float)  # z, y, x
    pos = [origin[2 - a] + spacing * idx[a] for a in range(3)]  # z, y, x in mm
    inside = sum((p - c) ** 2 for p, c in zip(pos, centre_mm[::-1])) <= radius_mm**2
    array = np.where(inside, values if values is not None else 1.0, 0.0).astype(np.float32)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out, inside


@pytest.fixture(scope="module")
def phantom():
    rng = np.random.default_rng(3)
    size = 40
    values = 100.0 + 10.0 * rng.standard_normal((size,) * 3)
    refvi, inside = _sphere_image(4.0, size, (-1.3, 0.7, 2.1), 60.0, (78.0, 80.0, 79.0), values)
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(refvi)
    grid = Grid((80, 80, 80), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lung = resample_to_grid(mask, grid, "mask") > 0
    depth = ndimage.distance_transform_edt(lung, sampling=2.0)
    border = lung & (depth <= 4.0)
    return refvi, mask, grid, lung, border


def _defect_fractions(refvi_2mm, lung, border):
    defect = derive_defects(refvi_2mm, lung, fraction=0.3).defect_zyx > 0
    return float(defect[border].mean()), float(defect[lung & ~border].mean())


def test_masked_resampling_has_no_rim(phantom):
    refvi, mask, grid, lung, border = phantom
    refvi_2mm = resample_refvi(refvi, mask, grid, "masked")
    assert np.isfinite(refvi_2mm[lung]).all()
    at_border, inside = _defect_fractions(refvi_2mm, lung, border)
    assert abs(at_border - inside) < 0.08, (at_border, inside)


def test_plain_linear_resampling_shows_the_rim(phantom):
    refvi, mask, grid, lung, border = phantom
    at_border, inside = _defect_fractions(resample_refvi(refvi, mask, grid, "linear"), lung, border)
    assert at_border > inside + 0.25, (at_border, inside)


def test_masked_values_are_local_means_of_lung_voxels(phantom):
    refvi, mask, grid, lung, _ = phantom
    constant = sitk.Cast(mask, sitk.sitkFloat32) * 250.0
    out = resample_refvi(constant, mask, grid, "masked")
    np.testing.assert_allclose(out[lung], 250.0, rtol=1e-5)


def test_no_mask_means_the_refvi_grid_and_nan_outside_it():
    refvi, _ = _sphere_image(4.0, 10, (0.0, 0.0, 0.0), 1e6, (0.0, 0.0, 0.0))  # all ones, 0..36 mm
    grid = Grid((30, 30, 30), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    out = resample_refvi(refvi, None, grid, "masked")
    assert np.nanmax(np.abs(out - 1.0)) < 1e-5
    assert np.isnan(out[-1, -1, -1])  # 58 mm: no RefVI voxel near


def test_unknown_method_is_an_error(phantom):
    refvi, mask, grid, _, _ = phantom
    with pytest.raises(ValueError, match="masked"):
        resample_refvi(refvi, mask, grid, "cubic")
