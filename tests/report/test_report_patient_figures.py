"""Per-patient panels: the slice shown goes through both lungs and the defects; every method gets its panel."""

from __future__ import annotations

import numpy as np
from matplotlib import image as mpimg

from vent.report.figures import method_style
from vent.report.patient_figures import MethodSlice, PatientPanels, patient_panel_figure, representative_slices


def _lungs(shape=(20, 16, 24)) -> np.ndarray:
    lung = np.zeros(shape, np.uint8)
    lung[3:17, 4:12, 3:10] = 1
    lung[3:17, 4:12, 14:21] = 1
    return lung


def test_the_representative_slice_holds_the_most_defects_among_large_cross_sections() -> None:
    lung = _lungs()
    truth = np.zeros_like(lung)
    truth[12:14, 9, 4:8] = 1  # a defect in coronal slice y = 9 and axial slices z = 12, 13
    truth[4, 4, 15] = 1
    y, z = representative_slices(lung, truth)
    assert y == 9 and z in (12, 13)
    lung_with_tip = lung.copy()
    lung_with_tip[2, 5, 5] = 1  # a one-voxel lung tip full of defect is not a representative slice
    truth_tip = np.zeros_like(lung)
    truth_tip[2, 5, 5] = 1
    assert representative_slices(lung_with_tip, truth_tip)[1] != 2


def test_without_defects_the_largest_cross_section_is_shown() -> None:
    lung = _lungs()
    lung[2:18, 11, 1:23] = 1  # coronal slice y = 11 gets the most lung
    y, _ = representative_slices(lung, np.zeros_like(lung))
    assert y == 11


def test_the_panel_figure_draws_every_method_in_its_colour(tmp_path) -> None:
    rng = np.random.default_rng(0)
    lung = _lungs()
    truth = (lung * (rng.random(lung.shape) < 0.3)).astype(np.uint8)
    ct = rng.normal(-700, 40, (3, *lung.shape)).astype(np.float32)
    names = ("lstm", "ctvi_jac", "densest_inhale")
    methods = [
        MethodSlice(method_style(name, name, f"label {name}"), np.where(lung > 0, truth, np.nan).astype(float), 0.5)
        for name in names
    ]
    panels = PatientPanels("Subject_01", ct, ["1 max exhale", "2 max inhale", "3"], rng.random(lung.shape), truth,
                           lung, methods, "Subject_01: a test patient of fold 0")
    path = tmp_path / "patient.png"
    patient_panel_figure(panels, path)
    assert path.stat().st_size > 10_000 and path.with_suffix(".svg").stat().st_size > 10_000
    pixels = mpimg.imread(path)[..., :3]
    for name in names:  # each method's colour fills its predictions and frames its panel
        colour = np.array(method_style(name, name, name).color)
        assert (np.abs(pixels - colour).max(axis=-1) < 0.02).sum() > 200, name
