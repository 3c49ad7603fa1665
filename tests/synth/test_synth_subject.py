"""Tests of one synthetic subject: determinism, geometry, breathing physics and learnable ground truth.

The physics checks use only the images (as a reader of real data would) plus the planted truth; the RefVI checks
follow the VAMPIRE ground-truth definition (lowest 30% of the RefVI by volume inside the lung).
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from vent.errors import ConfigError
from vent.synth import SyntheticSubject, make_synthetic_subject

ARRAY = sitk.GetArrayFromImage


@pytest.fixture(scope="module")
def tiny_pet() -> list[SyntheticSubject]:
    return [make_synthetic_subject(k, "pet", "tiny", 0) for k in (1, 2, 3)]


@pytest.fixture(scope="module")
def tiny_spect() -> list[SyntheticSubject]:
    return [make_synthetic_subject(k, "spect", "tiny", 0) for k in (1, 2)]


@pytest.fixture(scope="module")
def tiny_all(tiny_pet, tiny_spect) -> list[SyntheticSubject]:
    return tiny_pet + tiny_spect


def _all_arrays(subject: SyntheticSubject) -> list[np.ndarray]:
    images = subject.phases + subject.phase_masks + [
        subject.average_image, subject.average_mask, subject.vent_image, subject.vent_mask, subject.defect_mask,
    ]
    return [ARRAY(image) for image in images]


def test_same_seed_gives_identical_arrays(tiny_pet):
    again = make_synthetic_subject(1, "pet", "tiny", 0)
    for first, second in zip(_all_arrays(tiny_pet[0]), _all_arrays(again)):
        np.testing.assert_array_equal(first, second)
    assert again.truth == tiny_pet[0].truth


def test_different_seed_or_index_gives_different_subject(tiny_pet):
    other_seed = make_synthetic_subject(1, "pet", "tiny", 1)
    reference = ARRAY(tiny_pet[0].phases[0])
    other = ARRAY(other_seed.phases[0])
    assert reference.shape != other.shape or not np.array_equal(reference, other)
    assert other_seed.truth["defects"] != tiny_pet[0].truth["defects"]
    assert tiny_pet[1].truth["defects"] != tiny_pet[0].truth["defects"]


@pytest.mark.parametrize(
    ("modality", "n_phases", "spacing_xyz"), [("pet", 5, (1.07, 1.07, 5.0)), ("spect", 10, (0.97, 0.97, 2.5))]
)
def test_phase_count_spacing_and_pixel_types(modality, n_phases, spacing_xyz, tiny_pet, tiny_spect):
    subject = (tiny_pet if modality == "pet" else tiny_spect)[0]
    assert len(subject.phases) == len(subject.phase_masks) == n_phases
    for image in subject.phases + [subject.average_image]:
        assert image.GetPixelID() == sitk.sitkInt16
        np.testing.assert_allclose(image.GetSpacing(), spacing_xyz)
    for mask in subject.phase_masks + [subject.average_mask, subject.vent_mask, subject.defect_mask]:
        assert mask.GetPixelID() == sitk.sitkUInt8
    assert subject.vent_image.GetPixelID() == sitk.sitkFloat32


def test_ct_geometry_shared_and_refvi_on_its_own_grid(tiny_all):
    for subject in tiny_all:
        ct = subject.average_image
        assert max(abs(v) for v in ct.GetOrigin()) > 10.0  # non-trivial origin
        for image in subject.phases + subject.phase_masks + [subject.average_mask, subject.defect_mask]:
            assert image.GetSize() == ct.GetSize()
            np.testing.assert_allclose(image.GetOrigin(), ct.GetOrigin())
            np.testing.assert_allclose(image.GetSpacing(), ct.GetSpacing())
        assert subject.vent_image.GetSize() != ct.GetSize()
        assert not np.allclose(subject.vent_image.GetOrigin(), ct.GetOrigin())
        assert subject.vent_mask.GetSize() == subject.vent_image.GetSize()


def test_refvi_mask_resampled_in_physical_space_overlaps_lung_mask(tiny_all):
    """VentMask resampled onto the CT grid (nearest neighbour, physical space) has Dice > 0.8 with AverageMask."""
    for subject in tiny_all:
        vent_on_ct = sitk.Resample(
            subject.vent_mask, subject.average_mask, sitk.Transform(), sitk.sitkNearestNeighbor, 0
        )
        a, b = ARRAY(vent_on_ct) > 0, ARRAY(subject.average_mask) > 0
        dice = 2.0 * np.sum(a & b) / (a.sum() + b.sum())
        assert dice > 0.8, subject.subject_id


def test_lung_size_of_tiny_subjects_at_2mm(tiny_all):
    """Tiny subjects have roughly 1.5k-4k lung voxels once resampled to 2 x 2 x 2 mm."""
    for subject in tiny_all:
        mask = subject.average_mask
        n_voxels = ARRAY(mask).sum() * np.prod(mask.GetSpacing()) / 8.0
        assert 1500 <= n_voxels <= 4000, (subject.subject_id, n_voxels)


def test_defect_fraction_in_range(tiny_all):
    for subject in tiny_all:
        defects, lung = ARRAY(subject.defect_mask) > 0, ARRAY(subject.average_mask) > 0
        assert not np.any(defects & ~lung)
        fraction = defects.sum() / lung.sum()
        assert 0.15 <= fraction <= 0.40, (subject.subject_id, fraction)
        assert 1 <= len(subject.defects) <= 4


def test_lung_volume_largest_at_inhale_smallest_at_exhale(tiny_all):
    for subject in tiny_all:
        volumes = [ARRAY(mask).sum() for mask in subject.phase_masks]
        assert int(np.argmax(volumes)) == len(volumes) // 2, volumes
        assert int(np.argmin(volumes)) == 0, volumes


def test_mean_lung_hu_lower_at_inhale(tiny_all):
    """Mean HU of the lung interior (mask eroded by one voxel: the rim is partial volume) drops at inhale."""
    for subject in tiny_all:
        inhale = len(subject.phases) // 2
        means = []
        for phase in (0, inhale):
            interior = ndimage.binary_erosion(ARRAY(subject.phase_masks[phase]) > 0)
            means.append(ARRAY(subject.phases[phase])[interior].mean())
        assert means[1] < means[0] - 3.0, (subject.subject_id, means)
        assert -900 < means[1] < means[0] < -600  # parenchyma of a (scaled-down) adult lung


def test_tissue_hu_ranges(tiny_pet):
    """Soft tissue around 0-60 HU, fat around -100 HU and bone up to ~1000 HU are all present."""
    hu = ARRAY(tiny_pet[0].average_image)
    body = hu[ARRAY(tiny_pet[0].average_mask) == 0]
    assert np.mean((body > 0) & (body < 80)) > 0.10
    assert np.mean((body > -150) & (body < -60)) > 0.01
    assert np.percentile(body, 99.9) > 300


@pytest.fixture(scope="module")
def demo_subjects() -> list[SyntheticSubject]:
    return [make_synthetic_subject(1, "pet", "demo", 0), make_synthetic_subject(1, "spect", "demo", 0)]


def test_defects_change_density_less_than_healthy_lung(demo_subjects):
    """Exhale-to-inhale density change, relative to tissue content (the mass-conserving estimate of J - 1,
    (HU_ex - HU_in) / (1000 + HU_in)), is smaller in planted defects than in healthy lung (interior voxels).

    Uses ``demo`` size: at ``tiny`` size 5 mm slices cover a lung only ~10 slices tall, and vessel and texture motion
    through fixed voxels dominates a regional mean.
    """
    for subject in demo_subjects:
        inhale = len(subject.phases) // 2
        exhale_hu, inhale_hu = (ARRAY(subject.phases[p]).astype(float) for p in (0, inhale))
        both = ARRAY(subject.phase_masks[0]) & ARRAY(subject.phase_masks[inhale])
        interior = ndimage.binary_erosion(both > 0)
        defect = ARRAY(subject.defect_mask) > 0
        changes = []
        for region in (interior & defect, interior & ~defect):
            changes.append((exhale_hu[region].mean() - inhale_hu[region].mean()) / (1000 + inhale_hu[region].mean()))
        assert changes[1] > 0.02
        assert changes[0] < 0.75 * changes[1], (subject.modality, changes)
        ventilation = ARRAY(subject.local_ventilation)
        assert ventilation[interior & defect].mean() < 0.5 * ventilation[interior & ~defect].mean()


def _low_region_dice(subject: SyntheticSubject, fraction: float = 0.3) -> tuple[float, float]:
    """Dice of the RefVI's lowest-`fraction` lung voxels (on the CT grid) with the planted defects, and chance."""
    vent = ARRAY(sitk.Resample(subject.vent_image, subject.average_mask, sitk.Transform(), sitk.sitkLinear, 0.0,
                               sitk.sitkFloat32))
    vent_mask = ARRAY(sitk.Resample(subject.vent_mask, subject.average_mask, sitk.Transform(),
                                    sitk.sitkNearestNeighbor, 0)) > 0
    lung = (ARRAY(subject.average_mask) > 0) & vent_mask
    defects = (ARRAY(subject.defect_mask) > 0) & lung
    low = lung & (vent <= np.percentile(vent[lung], 100 * fraction))
    dice = 2.0 * np.sum(low & defects) / (low.sum() + defects.sum())
    defect_fraction = defects.sum() / lung.sum()
    chance = 2.0 * fraction * defect_fraction / (fraction + defect_fraction)  # expected Dice of a random region
    return float(dice), float(chance)


def test_refvi_low_region_is_learnable_but_blurred(tiny_all):
    """Lowest 30% of the RefVI overlaps the planted defects much better than chance, but not perfectly."""
    results = [_low_region_dice(subject) for subject in tiny_all]
    for dice, chance in results:
        assert dice > chance + 0.08, results
        assert dice < 0.92, results
    assert np.mean([d - c for d, c in results]) > 0.15, results


def test_refvi_has_hot_spot_outliers_and_zero_outside_mask(tiny_all):
    for subject in tiny_all:
        vent, mask = ARRAY(subject.vent_image), ARRAY(subject.vent_mask) > 0
        assert np.all(vent[~mask] == 0) and np.all(vent >= 0)
        values = vent[mask]
        assert values.max() > values.mean() + 4 * values.std()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"modality": "mri"}, "modality"), ({"size": "huge"}, "size"), ({"seed": -1}, "seed"), ({"index": 0}, "index")],
)
def test_bad_arguments_raise_config_error(kwargs, word):
    arguments = {"index": 1, "modality": "pet", "size": "tiny", "seed": 0} | kwargs
    with pytest.raises(ConfigError, match=word):
        make_synthetic_subject(**arguments)
