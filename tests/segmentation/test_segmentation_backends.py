"""The segmenter registry and the per-case policy (per phase, or once on the average)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk

from vent.config import SegmentationConfig
from vent.errors import ConfigError, DataError
from vent.segmentation import SEGMENTERS, segment_case, segment_image


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _phases(root, case="Subject_01"):
    folder = root / case / "CT"
    images = [sitk.ReadImage(str(p)) for p in sorted(folder.glob("PhaseImage_*.mha"))]
    masks = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0 for p in sorted(folder.glob("PhaseMask_*.mha"))]
    return images, masks


@pytest.mark.parametrize("mode", ["per_phase", "average"])
def test_synthetic_phases_are_segmented_close_to_their_masks(tiny_data, mode):
    """On the tiny synthetic 4DCT (lungs of ~17 ml at 2 x 2 x 5 mm-ish voxels, so the border is a large share of
    the lung) each phase's segmentation agrees with the generator's mask at Dice >= 0.9 (measured 0.92-0.94); the
    real-CT validation (Dice 0.97 per lung on LUNG1-001) is in test_segmentation_classical.py."""
    images, truth = _phases(tiny_data)
    masks, facts = segment_case(images, None, SegmentationConfig(mode=mode), [f"phase {i}" for i in range(5)])
    assert len(masks) == len(images) and facts["mode"] == mode
    for mask, expected, image in zip(masks, truth, images):
        assert mask.GetSize() == image.GetSize() and mask.GetOrigin() == image.GetOrigin()
        assert _dice(sitk.GetArrayFromImage(mask) > 0, expected) >= 0.9
    if mode == "average":  # one mask carried to every phase
        assert all(m is masks[0] for m in masks) and facts["segmented"] == "mean of the phases"


def test_lungmask_backend_says_how_to_install_it(monkeypatch, tiny_data):
    monkeypatch.setitem(sys.modules, "lungmask", None)  # the package is not installed here: import fails
    images, _ = _phases(tiny_data)
    with pytest.raises(ConfigError, match="pip install lungmask.*backend: classical"):
        segment_image(images[0], SegmentationConfig(backend="lungmask"), "phase 1")


def test_lungmask_load_failure_is_a_clear_error(monkeypatch, tiny_data):
    """A download or load failure of the weights names the model and the way out, not a traceback."""
    import types

    class Inferer:
        def __init__(self, modelname):
            raise OSError(f"could not download weights for {modelname}")

    monkeypatch.setitem(sys.modules, "lungmask", types.SimpleNamespace(LMInferer=Inferer))
    images, _ = _phases(tiny_data)
    with pytest.raises(DataError, match=r"lungmask could not load or run model 'R231'.*OSError.*backend: classical"):
        segment_image(images[0], SegmentationConfig(backend="lungmask"), "phase 1")


def test_lungmask_labels_become_a_lung_mask_on_the_ct_grid(monkeypatch, tiny_data):
    """lungmask returns (Z, Y, X) labels 1 (right) and 2 (left) on the input's voxels; both count as lung."""
    import types

    images, truth = _phases(tiny_data)

    class Inferer:
        def __init__(self, modelname):
            self.modelname = modelname

        def apply(self, image):
            return truth[0].astype(np.uint8) * 2

    monkeypatch.setitem(sys.modules, "lungmask", types.SimpleNamespace(LMInferer=Inferer))
    mask, facts = SEGMENTERS["lungmask"](images[0], SegmentationConfig(backend="lungmask"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask) > 0, truth[0])
    assert facts["lungs_found"] == 1 and "one lung only" in facts["warning"]  # label 2 only: the left lung
    assert mask.GetOrigin() == images[0].GetOrigin() and mask.GetDirection() == images[0].GetDirection()


def test_an_image_without_lungs_names_the_file(tiny_data):
    images, _ = _phases(tiny_data)
    solid = sitk.Image(images[0].GetSize(), sitk.sitkFloat32) + 40.0  # soft tissue everywhere
    solid.CopyInformation(images[0])
    with pytest.raises(DataError, match="lung segmentation of phase 1 failed"):
        segment_image(solid, SegmentationConfig(), "phase 1")
