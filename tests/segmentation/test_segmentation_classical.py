"""Classical lung segmentation: Dice per lung against the expert masks of the real CT LUNG1-001 (threshold 0.95, the
issue's target), airways removed, left/right by anatomy whatever the direction matrix, touching lungs split, a single
lung kept on its side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vent.config import SegmentationConfig
from vent.errors import DataError
from vent.segmentation import segment_case, segment_lungs

LUNG1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "lung_ct" / "lung1-001"
DICE_THRESHOLD = 0.95
"""The issue's target for each lung; measured 0.968 (right) and 0.970 (left) with the defaults."""


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def lung1():
    if not LUNG1.is_dir():
        pytest.fail(f"{LUNG1} is missing: the reference CT lives in ../shared/data (beside the project root)")
    ct = sitk.ReadImage(str(LUNG1 / "LUNG1-001_ct.nii.gz"))
    masks = {side: sitk.GetArrayFromImage(sitk.ReadImage(str(LUNG1 / f"LUNG1-001_mask_Lung-{side.title()}.nii.gz")))
             > 0 for side in ("left", "right")}
    return ct, masks, segment_lungs(ct)


def test_each_lung_matches_the_expert_mask_of_lung1_001(lung1) -> None:
    ct, expert, result = lung1
    for side in ("left", "right"):
        mask = getattr(result, side)
        assert mask.GetSize() == ct.GetSize() and mask.GetDirection() == ct.GetDirection()
        dice = _dice(sitk.GetArrayFromImage(mask) > 0, expert[side])
        assert dice >= DICE_THRESHOLD, f"{side} lung Dice {dice:.4f}"
    assert not result.facts["lungs_touched"]


def test_the_trachea_is_found_and_left_out(lung1) -> None:
    ct, expert, result = lung1
    airways = sitk.GetArrayFromImage(result.airways) > 0
    assert 10.0 <= result.facts["airway_ml"] <= 80.0  # an adult trachea and main bronchi
    lungs = sitk.GetArrayFromImage(result.combined()) > 0
    apex = np.nonzero((expert["left"] | expert["right"]).any(axis=(1, 2)))[0].max()
    assert airways[apex + 1 :].sum() > 1000 and not lungs[apex + 3 :].any()  # above the apices: trachea, no lung


def test_a_flipped_direction_matrix_keeps_left_and_right_on_the_anatomy(lung1) -> None:
    ct, _, result = lung1
    flipped = sitk.Flip(ct, [True, False, False])  # same voxels on the other side of the array, direction x = -1
    assert flipped.GetDirection()[0] == -1.0
    again = segment_lungs(flipped)
    for side in ("left", "right"):  # in physical space the same lung, so resampled onto the original grid: equal
        back = sitk.Resample(getattr(again, side), ct, sitk.Transform(), sitk.sitkNearestNeighbor)
        assert _dice(sitk.GetArrayFromImage(back) > 0, sitk.GetArrayFromImage(getattr(result, side)) > 0) > 0.999


def _phantom(gap_voxels: int) -> sitk.Image:
    """A torso of soft tissue with two air lungs (-850 HU) whose medial faces are ``gap_voxels`` apart (0: touching
    through a thin bridge), and a trachea above them."""
    ct = np.full((40, 64, 80), -1000.0, np.float32)
    ct[:, 8:56, 6:74] = 40.0
    ct[4:34, 16:48, 12:38 - gap_voxels // 2] = -850.0
    ct[4:34, 16:48, 42 + gap_voxels // 2 : 68] = -850.0
    ct[4:34, 30:34, 38 - gap_voxels // 2 : 42 + gap_voxels // 2] = -850.0 if gap_voxels == 0 else 40.0
    ct[30:40, 30:34, 38:42] = -1000.0  # the trachea, up to the top slice
    image = sitk.GetImageFromArray(ct)
    image.SetSpacing((2.0, 2.0, 2.0))
    return image


def test_touching_lungs_are_split_into_two_of_similar_size() -> None:
    result = segment_lungs(_phantom(gap_voxels=0))
    assert result.facts["lungs_touched"]
    left, right = (sitk.GetArrayFromImage(getattr(result, s)) > 0 for s in ("left", "right"))
    assert not (left & right).any() and 0.8 < left.sum() / right.sum() < 1.25
    assert np.argwhere(left)[:, 2].mean() > np.argwhere(right)[:, 2].mean()  # identity direction: +x is the left


def test_an_image_without_air_is_refused() -> None:
    image = sitk.GetImageFromArray(np.full((10, 20, 20), 40.0, np.float32))
    with pytest.raises(DataError, match="no air inside the body"):
        segment_lungs(image)


def test_a_ct_with_one_lung_gives_that_lung_and_an_empty_other_side(lung1) -> None:
    """LUNG1-001 with its right lung filled with soft tissue (as after a right pneumonectomy): the left lung matches
    its expert mask, the right mask is empty, and the facts say so; before, this was split into two 'lungs'."""
    ct, expert, _ = lung1
    array = sitk.GetArrayFromImage(ct).astype(np.float32)
    array[expert["right"]] = 40.0
    one_lung = sitk.GetImageFromArray(array)
    one_lung.CopyInformation(ct)
    result = segment_lungs(one_lung)
    left, right = (sitk.GetArrayFromImage(getattr(result, s)) > 0 for s in ("left", "right"))
    assert _dice(left, expert["left"]) >= DICE_THRESHOLD and not right.any()
    assert result.facts["lungs_found"] == 1 and not result.facts["lungs_touched"]
    assert "only the left lung" in result.facts["warning"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_single_lung_is_labelled_by_its_side_of_the_midline(side) -> None:
    ct = sitk.GetArrayFromImage(_phantom(gap_voxels=8))
    # identity direction: +x is the patient's left, so the lung at high x is the left one; the other becomes tissue
    ct[4:34, 16:48, 12:40] = ct[4:34, 16:48, 12:40] if side == "right" else 40.0
    ct[4:34, 16:48, 40:68] = ct[4:34, 16:48, 40:68] if side == "left" else 40.0
    image = sitk.GetImageFromArray(ct)
    image.SetSpacing((2.0, 2.0, 2.0))
    result = segment_lungs(image)
    kept, empty = (side, "right") if side == "left" else (side, "left")
    assert sitk.GetArrayFromImage(getattr(result, kept)).sum() > 10_000
    assert not sitk.GetArrayFromImage(getattr(result, empty)).any()
    masks, facts = segment_case([image], None, SegmentationConfig(mode="per_phase"), ["phase_1.mha"])
    assert facts["lungs_found"] == [1]
    assert facts["warnings"] == [f"phase_1.mha: {result.facts['warning']}"]
