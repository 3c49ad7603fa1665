"""preprocess: physical-space resampling onto one 2 mm grid, ground truth, and clear errors on bad subjects."""

import numpy as np
import pytest
import SimpleITK as sitk

from vent.config import config_from_dict
from vent.errors import DataError
from vent.io.vampire import find_subject_files
from vent.stages.preprocess import preprocess_subject


def _config(root, tmp_path, **preprocess):
    return config_from_dict({"run_dir": str(tmp_path / "run"), "data": {"root": str(root)},
                             "preprocess": preprocess}, tmp_path)


def test_resampled_to_2mm_and_cropped(phantom_cohort, tmp_path):
    case = preprocess_subject(find_subject_files(phantom_cohort, "Subject_01"), _config(phantom_cohort, tmp_path))
    assert case.grid.spacing_mm_xyz == (2.0, 2.0, 2.0)
    assert case.ct_tzyx.shape[0] == 3 and case.ct_tzyx.shape[1:] == case.lung_mask_zyx.shape
    assert case.ct_tzyx.dtype == np.float32
    lung = case.lung_mask_zyx > 0
    # lung HU per phase follows the phantom (-800 - 30 t), within noise and partial volume at the border
    for t in range(3):
        assert np.median(case.ct_tzyx[t][lung]) == pytest.approx(-800 - 30 * t, abs=15)
    # lung volume of an ellipsoid 24 x 28 x 24 mm semi-axes = 4/3 pi abc, within 10%
    expected_ml = 4 / 3 * np.pi * 24 * 28 * 24 / 1000
    assert case.attrs["lung_volume_ml"][0] == pytest.approx(expected_ml, rel=0.1)


def test_refvi_resampled_in_physical_space(phantom_cohort, tmp_path):
    case = preprocess_subject(find_subject_files(phantom_cohort, "Subject_01"), _config(phantom_cohort, tmp_path))
    reference = case.grid.reference_image()
    lung = np.argwhere(case.lung_mask_zyx > 0)
    errors = []
    for z, y, x in lung[:: max(1, len(lung) // 200)]:
        px = reference.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))[0]
        errors.append(abs(case.refvi_zyx[z, y, x] - (100.0 + 2.0 * px)))
    # the RefVI is linear in x, so linear interpolation must reproduce it up to float rounding
    assert np.median(errors) < 1e-3


def test_defects_are_lowest_refvi(phantom_cohort, tmp_path):
    case = preprocess_subject(find_subject_files(phantom_cohort, "Subject_01"), _config(phantom_cohort, tmp_path))
    lung = case.lung_mask_zyx > 0
    # the phantom's RefVI is linear in x, so every 2 mm x-plane shares one value: the lowest 30% by volume may
    # overshoot by the voxels tied at the threshold, never by more
    values = case.refvi_zyx[lung]
    tied = float(np.isclose(values, case.attrs["gt_threshold"], rtol=0, atol=1e-4).mean())
    assert 0.28 <= case.defect_zyx[lung].mean() <= 0.32 + tied
    assert case.refvi_zyx[lung & (case.defect_zyx > 0)].max() <= case.refvi_zyx[lung & (case.defect_zyx == 0)].min()


def test_phase_order_from_max_exhale(phantom_cohort, tmp_path):
    # make phase 3 the smallest lung: erode its mask
    path = phantom_cohort / "Subject_01" / "CT" / "PhaseMask_03.mha"
    sitk.WriteImage(sitk.BinaryErode(sitk.ReadImage(str(path)), [2, 2, 1]), str(path))
    config = _config(phantom_cohort, tmp_path)
    config.data.phase_order = "from_max_exhale"
    case = preprocess_subject(find_subject_files(phantom_cohort, "Subject_01"), config)
    assert case.attrs["phase_order"] == [3, 1, 2]
    assert case.attrs["exhale_phase"] == 0


def test_empty_mask_is_named(phantom_cohort, tmp_path):
    path = phantom_cohort / "Subject_01" / "CT" / "PhaseMask_02.mha"
    image = sitk.ReadImage(str(path))
    sitk.WriteImage(image * 0, str(path))
    with pytest.raises(DataError, match="PhaseMask_02.mha is empty"):
        preprocess_subject(find_subject_files(phantom_cohort, "Subject_01"), _config(phantom_cohort, tmp_path))


def test_nan_in_ct_is_named(phantom_cohort, tmp_path):
    path = phantom_cohort / "Subject_01" / "CT" / "PhaseImage_02.mha"
    _set_voxel(path, (3, 3, 3), np.nan)
    with pytest.raises(DataError, match="PhaseImage_02.mha holds 1 NaN"):
        preprocess_subject(find_subject_files(phantom_cohort, "Subject_01"), _config(phantom_cohort, tmp_path))


def test_non_overlapping_refvi_is_an_error(tmp_path):
    from phantoms import write_phantom_subject

    root = tmp_path / "study"
    write_phantom_subject(root / "Subject_01", refvi_offset_mm=(200.0, 0.0, 0.0))
    # the phantom's lung is fixed in physical space, so a RefVI grid moved 200 mm away has an empty VentMask
    with pytest.raises(DataError, match=r"VentImage.mha (holds no positive value|covers only 0% .* outside the lung)"):
        preprocess_subject(find_subject_files(root, "Subject_01"), _config(root, tmp_path))


def _set_voxel(path, index_zyx, value):
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array[index_zyx] = value
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path))


def test_refvi_nan_outside_lung_is_tolerated(phantom_cohort, tmp_path):
    _set_voxel(phantom_cohort / "Subject_01" / "GT" / "VentImage.mha", (0, 0, 0), np.nan)  # a corner: background
    case = preprocess_subject(find_subject_files(phantom_cohort, "Subject_01"), _config(phantom_cohort, tmp_path))
    assert np.isfinite(case.refvi_zyx).all()


def test_refvi_nan_inside_lung_is_named(phantom_cohort, tmp_path):
    _set_voxel(phantom_cohort / "Subject_01" / "GT" / "VentImage.mha", (9, 11, 10), np.nan)  # the lung centre
    with pytest.raises(DataError, match="VentImage.mha holds 1 NaN/inf values inside the lung mask"):
        preprocess_subject(find_subject_files(phantom_cohort, "Subject_01"), _config(phantom_cohort, tmp_path))


def _copy_subject(root, tmp_path, case="Subject_01"):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(root / case, target / case)
    return target


def test_a_subject_without_masks_is_segmented(tiny_data, tmp_path):
    """No PhaseMask files: preprocessing segments every phase (preprocess.segmentation) and records it; the analysed
    lung agrees with the one the given masks make (Dice >= 0.85 at 2 mm; measured 0.9 on the 17 ml synthetic lungs,
    whose border is a large share)."""
    root = _copy_subject(tiny_data, tmp_path)
    given = preprocess_subject(find_subject_files(root, "Subject_01"), _config(root, tmp_path))
    for path in (root / "Subject_01" / "CT").glob("*Mask*"):
        path.unlink()
    files = find_subject_files(root, "Subject_01")
    assert not files.has_masks
    segmented = preprocess_subject(files, _config(root, tmp_path))
    assert given.attrs["lung_masks"] == "given" and segmented.attrs["lung_masks"] == "segmented"
    assert '"backend": "classical"' in segmented.attrs["segmentation"]
    assert segmented.grid == given.grid  # the crop (lung bounding box + 20 mm) is the same
    a, b = given.lung_mask_zyx > 0, segmented.lung_mask_zyx > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.85
    with pytest.raises(DataError, match="segmentation.when is 'never'"):
        from vent.stages.preprocess import check_cohort

        check_cohort({"Subject_01": files}, segmentation=_config(root, tmp_path, segmentation={"when": "never"})
                     .preprocess.segmentation)


def test_a_subject_without_refvi_has_no_ground_truth(tiny_data, tmp_path):
    """vent predict's case: no RefVI, so no ground truth (zero defects, has_reference false), the rest unchanged."""
    root = _copy_subject(tiny_data, tmp_path)
    with_refvi = preprocess_subject(find_subject_files(root, "Subject_01"), _config(root, tmp_path))
    for path in (root / "Subject_01" / "GT").iterdir():
        path.unlink()
    case = preprocess_subject(find_subject_files(root, "Subject_01"), _config(root, tmp_path, analysis_mask="average"))
    assert case.attrs["has_reference"] is False and "gt_threshold" not in case.attrs
    assert not case.defect_zyx.any() and not case.refvi_zyx.any()
    assert with_refvi.attrs["has_reference"] is True
    np.testing.assert_array_equal(case.ct_tzyx.shape[0], with_refvi.ct_tzyx.shape[0])
