"""CT ventilation from registration (vent.baselines.ctvi): the DIR-Jac and DIR-HU formulas, their agreement with
the planted volume change of a mass-conserving synthetic 4DCT, and the two registry trainers on a tiny preprocessed
run (prediction contract, the ground truth's defect definition, one registration cache shared by both rows)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage, stats

from vent.baselines import ctvi
from vent.baselines.ctvi import HU_CLIP, hu_ventilation, jacobian_ventilation, registration_key
from vent.baselines.registration import register_phases, registration_mask, warp_to_fixed
from vent.io.images import Grid
from vent.io.registration import CaseRegistration, read_case_registration, write_case_registration
from vent.models.registry import RegistrationParams

SPACING_ZYX = (2.5, 1.2, 0.7)
"""Anisotropic, none of them 1 mm: a Jacobian that ignored the spacing would be far off."""


def _affine_field(matrix: np.ndarray, shape=(7, 9, 11)) -> np.ndarray:
    """u(x) = A (x - c), x the voxel position in mm along the grid axes (z, y, x) with :data:`SPACING_ZYX`."""
    position = np.indices(shape, dtype=np.float64) * np.reshape(SPACING_ZYX, (3, 1, 1, 1))
    centred = position - position.mean(axis=(1, 2, 3), keepdims=True)
    return np.einsum("ij,j...->i...", matrix, centred).astype(np.float32)


AFFINE = np.array([[0.10, 0.03, -0.02], [0.01, -0.05, 0.04], [0.02, 0.06, 0.08]])


def test_the_jacobian_of_an_affine_field_is_its_determinant_minus_one():
    expected = np.linalg.det(np.eye(3) + AFFINE) - 1.0  # 0.1290...
    ventilation = jacobian_ventilation(_affine_field(AFFINE), SPACING_ZYX)
    np.testing.assert_allclose(ventilation, expected, atol=1e-5)  # every voxel, edges included (u is linear)
    # the spacing matters: in voxel units every derivative is off by its spacing
    assert abs(float(jacobian_ventilation(_affine_field(AFFINE), (1.0, 1.0, 1.0)).mean()) - expected) > 0.05


def test_the_jacobian_agrees_with_simpleitks_filter():
    """SimpleITK's DisplacementFieldJacobianDeterminant on the same field as a vector image (components x, y, z)
    with the grid's spacing, inside the grid (the filter's edge handling differs)."""
    u = _affine_field(AFFINE) + 0.4 * np.sin(np.indices((7, 9, 11)).sum(axis=0) / 3.0).astype(np.float32)
    image = sitk.GetImageFromArray(np.moveaxis(u[::-1], 0, -1).astype(np.float64), isVector=True)
    image.SetSpacing(SPACING_ZYX[::-1])
    reference = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(image)) - 1.0
    ours = jacobian_ventilation(u, SPACING_ZYX)
    np.testing.assert_allclose(ours[1:-1, 1:-1, 1:-1], reference[1:-1, 1:-1, 1:-1], atol=1e-4)


def test_dir_hu_of_known_pairs():
    assert round(float(hu_ventilation(-750.0, -850.0)), 3) == 0.889
    rng = np.random.default_rng(0)
    exhale, inhale = rng.uniform(-990, -10, 500), rng.uniform(-990, -10, 500)
    np.testing.assert_allclose(hu_ventilation(exhale, inhale),
                               1000 * (inhale - exhale) / (exhale * (1000 + inhale)), rtol=1e-5)
    assert float(hu_ventilation(-800.0, -800.0)) == 0.0


def test_dir_hu_clips_the_hu_and_never_divides_by_zero():
    low, high = HU_CLIP
    assert (low, high) == (-999.0, -1.0)
    # outside [-999, -1] a value counts as the bound: -1024 (air below -1000) as -999, +40 (tissue) as -1
    assert float(hu_ventilation(-1024.0, -850.0)) == pytest.approx(float(hu_ventilation(-999.0, -850.0)))
    assert float(hu_ventilation(-750.0, 40.0)) == pytest.approx(float(hu_ventilation(-750.0, -1.0)))
    # the published bounds zero the denominator: HU_ex = 0 (no air at exhale), HU_in = -1000 (no tissue at inhale)
    degenerate = hu_ventilation(np.array([0.0, -500.0, 0.0]), np.array([-500.0, -1000.0, -1000.0]))
    assert np.isfinite(degenerate).all()
    assert float(degenerate[2]) == pytest.approx(1000 * (-999 + 1) / (-1 * 1))  # the largest value, 998000


def test_the_registration_key_changes_with_every_parameter():
    base = RegistrationParams()
    assert registration_key(base) == registration_key(RegistrationParams()) and len(registration_key(base)) == 16
    changed = {"backend": "simpleitk", "grid_spacing_mm": 12.0, "resolutions": 3, "iterations": 100,
               "spatial_samples": 3000, "bending_weight": 0.1, "mask_dilation_mm": 6.0, "map_to": "average",
               "seed": 1}
    assert set(changed) == set(RegistrationParams.model_fields)
    keys = {registration_key(base.model_copy(update={name: value})) for name, value in changed.items()}
    assert len(keys) == len(changed) and registration_key(base) not in keys


def mass_conserving_phantom(seed: int = 0, shape=(44, 52, 68), spacing: float = 2.0):
    """A synthetic 4DCT pair whose motion conserves tissue mass.

    Inhale: two ellipsoidal lungs in a body, parenchyma -840 HU with texture and vessel-like bright blobs. Planted
    regional ventilation: strain s = 0.12 (1 + 0.8 (1 - h)) (h = height in the lung: twice the expansion at the base)
    cut by up to 85% in two Gaussian low-ventilation regions (sigma 9 mm), turned into a displacement u with
    div u = s by ``vent.synth.breathing.displacement_from_strain``; J = det(I + grad u). Exhale, by mass
    conservation: HU_ex(x) = J(x) (1000 + HU_in(x + u(x))) - 1000, i.e. HU_in(T(x)) = (1000 + HU_ex(x)) / J(x) - 1000.

    Returns:
        (grid, exhale HU, inhale HU, exhale lung mask, planted u (3, Z, Y, X) mm, planted J, HU_in(T(x))).
    """
    from vent.synth.breathing import displacement_from_strain, jacobian_determinant
    from vent.synth.grids import Grid as SynthGrid
    from vent.synth.grids import correlated_noise

    rng = np.random.default_rng(seed)
    model = SynthGrid(shape, (spacing,) * 3, (0.0, 0.0, 0.0))
    z, y, x = model.mesh_mm_zyx()
    centre = [(n - 1) * spacing / 2 for n in shape]
    radii = (0.40 * shape[0] * spacing, 0.36 * shape[1] * spacing, 0.19 * shape[2] * spacing)
    offset = 0.24 * shape[2] * spacing
    lung = np.zeros(shape, bool)
    for side in (-1, 1):
        lung |= (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
                 + ((x - centre[2] - side * offset) / radii[2]) ** 2) <= 1
    body = ((y - centre[1]) / (0.48 * shape[1] * spacing)) ** 2 + ((x - centre[2]) / (0.49 * shape[2] * spacing)) ** 2
    texture, vessels = correlated_noise(rng, shape, [1.0] * 3), correlated_noise(rng, shape, [1.5] * 3)
    parenchyma = -840.0 + 35.0 * texture + 700.0 * np.clip(vessels - 1.3, 0.0, 1.0)
    inhale = np.where(lung, parenchyma, np.where(body <= 1, 40.0 + 10.0 * texture, -1000.0)).astype(np.float32)
    height = np.clip((z - (centre[0] - radii[0])) / (2 * radii[0]), 0.0, 1.0)
    strain = 0.12 * (1.0 + 0.8 * (1.0 - height)) * np.ones(shape)
    for side in (-1, 1):
        c = (centre[0] + rng.uniform(-0.4, 0.4) * radii[0], centre[1] + rng.uniform(-0.4, 0.4) * radii[1],
             centre[2] + side * offset)
        strain *= 1.0 - 0.85 * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * 9.0**2))
    occupancy = ndimage.gaussian_filter(lung.astype(np.float32), 0.7)
    u = displacement_from_strain((strain * occupancy).astype(np.float32), occupancy, model, midline_x_mm=centre[2],
                                 axis_fractions_zyx=(0.6, 0.25, 0.15), smoothing_mm=12.0)
    jacobian = jacobian_determinant(u, model.spacing_mm_zyx, 1.0)
    at = np.indices(shape, dtype=np.float32) + u / spacing
    inhale_at_t = ndimage.map_coordinates(inhale, at, order=1, mode="nearest")
    exhale = (jacobian * (1000.0 + inhale_at_t) - 1000.0).astype(np.float32)
    lung_exhale = ndimage.map_coordinates(lung.astype(np.float32), at, order=1) >= 0.5
    grid = Grid(shape[::-1], (spacing,) * 3, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return grid, exhale, inhale, lung_exhale, u, jacobian, inhale_at_t


def test_dir_hu_is_the_volume_change_per_air_fraction_under_mass_conservation():
    """With the planted (not registered) correspondence, DIR-HU = (J - 1) / F_ex exactly, F_ex = -HU_ex / 1000."""
    _, exhale, _, lung, _, jacobian, inhale_at_t = mass_conserving_phantom()
    inside = lung & (exhale > -999) & (exhale < -1) & (inhale_at_t > -999) & (inhale_at_t < -1)
    np.testing.assert_allclose(hu_ventilation(exhale, inhale_at_t)[inside],
                               ((jacobian - 1.0) * 1000.0 / -exhale)[inside], rtol=1e-3, atol=1e-4)


@pytest.mark.slow  # 8-12 s of registration, plus itk's first import (about 11 s) when it runs first
def test_ctvi_follows_the_planted_volume_change_of_a_mass_conserving_4dct():
    """Registered with the default elastix settings (2 threads), Spearman r_s with the planted J - 1 over the exhale
    lung's 31219 voxels, measured: DIR-Jac 0.645, DIR-HU 0.494 (the planted J - 1 spans only 0.05-0.20, and DIR-HU
    also varies with the air fraction it divides by). Bounds: DIR-Jac > 0.55, DIR-HU > 0.40; mean displacement error
    measured 0.37 mm, bound 0.7 mm (a registration that did nothing errs by |u|, 2.5 mm on average here)."""
    grid, exhale, inhale, lung, u, jacobian, _ = mass_conserving_phantom()
    mask = registration_mask(lung, grid.spacing_mm_zyx, 4.0)
    registration = register_phases(exhale, inhale, mask, grid, RegistrationParams(), threads=2)
    errors = np.linalg.norm(registration.displacement_zyx - u, axis=0)[lung]
    r_jac = stats.spearmanr(jacobian_ventilation(registration.displacement_zyx, grid.spacing_mm_zyx)[lung],
                            jacobian[lung] - 1.0)[0]
    r_hu = stats.spearmanr(hu_ventilation(exhale, registration.warped_zyx)[lung], jacobian[lung] - 1.0)[0]
    assert errors.mean() < 0.7
    assert r_jac > 0.55 and r_hu > 0.40


def _registration(case_id: str, key: str = "k", fingerprint: str = "f", average: bool = False) -> CaseRegistration:
    rng = np.random.default_rng(1)
    grid = Grid((5, 4, 3), (2.0, 2.0, 2.0), (1.0, 2.0, 3.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    field = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    return CaseRegistration(case_id, key, fingerprint, grid, field, rng.normal(size=(3, 4, 5)).astype(np.float32),
                            1.5, field * 2 if average else None, {"backend": "elastix", "params": {"seed": 0}})


def test_the_cache_file_round_trips_and_refuses_another_key_case_or_source(tmp_path):
    path = tmp_path / "registration" / "k" / "a.h5"
    write_case_registration(path, _registration("a", average=True))
    back = read_case_registration(path, "k", "a", "f")
    assert back is not None and back.grid == _registration("a").grid and back.seconds == 1.5
    np.testing.assert_array_equal(back.displacement_zyx, _registration("a").displacement_zyx)
    np.testing.assert_array_equal(back.to_average_zyx, 2 * _registration("a").displacement_zyx)
    assert back.attrs["backend"] == "elastix" and back.attrs["params"] == {"seed": 0}
    for key, case, source in (("other", "a", "f"), ("k", "b", "f"), ("k", "a", "changed")):
        assert read_case_registration(path, key, case, source) is None
    assert read_case_registration(tmp_path / "missing.h5", "k", "a", "f") is None
    with h5py.File(path, "a") as handle:
        handle.attrs["format_version"] = 99
    assert read_case_registration(path, "k", "a", "f") is None
    path.write_bytes(b"not hdf5")
    assert read_case_registration(path, "k", "a", "f") is None


TINY_PARAMS = {"resolutions": 2, "iterations": 60, "spatial_samples": 500}
"""Registration settings for the tiny run: the trainers' plumbing is under test, not the registration."""


@pytest.fixture(scope="module")
def tiny_preprocessed(tmp_path_factory):
    """The tiny synthetic cohort of the stage tests (4 PET-like subjects, tests/tinyrun.py) through preprocess."""
    from tinyrun import run_stages, tiny_config
    from vent.stages.preprocess import ensure_data

    base = tmp_path_factory.mktemp("ctvi_tiny")
    config = tiny_config(base / "run", base / "data")
    ensure_data(config)
    plans, _ = run_stages(config, names=("preprocess",))
    assert [plan.action for plan in plans] == ["run"]
    return config.run_dir


def _job(run_dir, model: str, params: dict, test: list[str], method: str = "volume"):
    from vent.config import ExecutionConfig, GroundTruthConfig, TrainConfig
    from vent.cv import Fold
    from vent.models.jobs import FoldJob

    train = TrainConfig(models={model: params}, reference_model=model)
    return FoldJob(run_dir, model, model, "none", Fold(0, ["Subject_03"], ["Subject_04"], test), train,
                   ExecutionConfig(threads=1), GroundTruthConfig(method=method, fraction=0.3))


def _expected_defects(values: np.ndarray, truth) -> np.ndarray:
    """The ground truth's definition applied to a map: outlier clip, then the lowest fraction (vent.groundtruth)."""
    from vent.groundtruth import defect_threshold, iterative_outlier_clip

    clip = iterative_outlier_clip(values, n_sd=truth.outlier_sd, tolerance=truth.tolerance,
                                  max_iterations=truth.max_iterations)
    clipped = np.clip(values, clip.lower, clip.upper)
    return clipped <= defect_threshold(clipped, truth.fraction, truth.method)


def test_both_rows_predict_every_analysed_voxel_and_share_one_registration(tiny_preprocessed, monkeypatch):
    from vent.io import layout
    from vent.io.artifacts import read_preprocessed_case
    from vent.models.registry import get_spec

    run_dir, cases = tiny_preprocessed, ["Subject_01", "Subject_02"]
    jac = get_spec("ctvi_jac").train_fold()(_job(run_dir, "ctvi_jac", TINY_PARAMS, cases), None)
    key = registration_key(RegistrationParams(**TINY_PARAMS))
    files = [layout.registration_file(run_dir, key, case) for case in cases]
    assert all(path.is_file() for path in files) and jac.record["registration_cached"] == dict.fromkeys(cases, False)
    written = [path.stat().st_mtime_ns for path in files]

    def no_registration(*args, **kwargs):
        raise AssertionError("the second row registered again instead of reading the cache")

    monkeypatch.setattr(ctvi, "register_case", no_registration)
    hu_job = _job(run_dir, "ctvi_hu", TINY_PARAMS, cases, method="cumulative")
    hu = get_spec("ctvi_hu").train_fold()(hu_job, None)
    assert hu.record["registration_cached"] == dict.fromkeys(cases, True)
    assert [path.stat().st_mtime_ns for path in files] == written
    assert hu.record["registration_seconds"] == jac.record["registration_seconds"]

    for outcome, name, truth in ((jac, "dir_jac", _job(run_dir, "ctvi_jac", {}, cases).ground_truth),
                                 (hu, "dir_hu", hu_job.ground_truth)):
        assert outcome.threshold is None and outcome.record["backend"] == "elastix"
        assert [p.case_id for p in outcome.predictions] == cases
        for prediction in outcome.predictions:
            pre = read_preprocessed_case(layout.case_file(run_dir, "preprocess", prediction.case_id))
            np.testing.assert_array_equal(prediction.coords_zyx, np.argwhere(pre.lung_mask_zyx > 0))
            assert prediction.continuous_name == name and prediction.continuous.dtype == np.float32
            assert prediction.grid == pre.grid and prediction.fold == 0
            np.testing.assert_array_equal(prediction.defect.astype(bool), _expected_defects(prediction.continuous,
                                                                                            truth))
    for prediction in jac.predictions:  # by volume: the lowest 30% of the analysed voxels
        assert prediction.defect.mean() == pytest.approx(0.3, abs=2 / len(prediction.coords_zyx))


def test_a_stale_cache_is_registered_again(tiny_preprocessed):
    from vent.io import layout

    run_dir, case = tiny_preprocessed, "Subject_03"
    params = {**TINY_PARAMS, "seed": 3}
    path = layout.registration_file(run_dir, registration_key(RegistrationParams(**params)), case)
    first = ctvi.ctvi_jacobian_fold(_job(run_dir, "ctvi_jac", params, [case]), None)
    with h5py.File(path, "a") as handle:
        handle.attrs["source_fingerprint"] = "another preprocessing"
    again = ctvi.ctvi_jacobian_fold(_job(run_dir, "ctvi_jac", params, [case]), None)
    assert first.record["registration_cached"] == again.record["registration_cached"] == {case: False}
    assert read_case_registration(path, again.record["registration_key"], case, "another preprocessing") is None


def test_map_to_average_scores_the_map_in_the_average_ct_frame(tiny_preprocessed):
    """``map_to: average`` registers the exhale phase onto the average CT as well, caches that field beside the
    first and samples the exhale-frame map through it."""
    from vent.io import layout
    from vent.io.artifacts import read_preprocessed_case

    run_dir, case = tiny_preprocessed, "Subject_04"
    params = {**TINY_PARAMS, "map_to": "average"}
    outcome = ctvi.ctvi_jacobian_fold(_job(run_dir, "ctvi_jac", params, [case]), None)
    key = outcome.record["registration_key"]
    pre = read_preprocessed_case(layout.case_file(run_dir, "preprocess", case))
    cached = read_case_registration(layout.registration_file(run_dir, key, case), key, case, pre.attrs["fingerprint"])
    assert cached is not None and cached.to_average_zyx is not None and cached.attrs["seconds_to_average"] > 0
    exhale_frame = jacobian_ventilation(cached.displacement_zyx, pre.grid.spacing_mm_zyx)
    expected = warp_to_fixed(exhale_frame, cached.to_average_zyx, pre.grid.spacing_mm_zyx)[pre.lung_mask_zyx > 0]
    np.testing.assert_allclose(outcome.predictions[0].continuous, expected, rtol=1e-6)
    assert outcome.record["registration_seconds"][case] > cached.seconds


def test_folding_and_a_backend_without_penalty_are_warned(tiny_preprocessed, monkeypatch):
    """A transform that folds (here u_z = -2 z: det(I + grad u) = -1 everywhere) is reported per patient, and the
    simpleitk backend says it does not use ``bending_weight``; both reach ``record["warnings"]``."""

    def folded(pre, params, key, threads=None):
        z = np.indices(pre.grid.shape_zyx, dtype=np.float32)[0] * pre.grid.spacing_mm_zyx[0]
        displacement = np.zeros((3, *pre.grid.shape_zyx), np.float32)
        displacement[0] = -2.0 * z
        return CaseRegistration(pre.case_id, key, "f", pre.grid, displacement, pre.ct_tzyx[0], 0.1)

    monkeypatch.setattr(ctvi, "register_case", folded)
    params = {**TINY_PARAMS, "backend": "simpleitk", "seed": 5}
    outcome = ctvi.ctvi_jacobian_fold(_job(tiny_preprocessed, "ctvi_jac", params, ["Subject_02"]), None)
    assert outcome.record["folding_fraction"] == {"Subject_02": 1.0}
    assert any("Subject_02: the registration folds" in w for w in outcome.record["warnings"])
    assert any("no bending-energy penalty" in w for w in outcome.record["warnings"])
