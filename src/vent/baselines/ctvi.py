"""Classical CT ventilation (CTVI) from deformable registration: the rows ``ctvi_jac`` and ``ctvi_hu``.

Both register the end-inhale phase (moving) onto the end-exhale phase (fixed) of the preprocessed 4DCT
(:mod:`vent.baselines.registration`), giving u on the exhale grid with T(x) = x + u(x), and derive a ventilation
map from it:

- **DIR-Jac** (:func:`jacobian_ventilation`): the local volume change, V = det(I + grad u) - 1.
- **DIR-HU** (:func:`hu_ventilation`, Guerrero et al. 2006, Castillo et al. 2010): the change of air content
  from the densities, V = 1000 (HU_in(T(x)) - HU_ex(x)) / (HU_ex(x) (1000 + HU_in(T(x)))).

If tissue mass is conserved, HU_in(T(x)) = (1000 + HU_ex(x)) / J(x) - 1000, and then DIR-HU = (J - 1) / F_ex with
F_ex = -HU_ex / 1000 the air fraction at exhale: both maps measure the same expansion, DIR-HU per unit of air.

Frames (``RegistrationParams.map_to``): the analysed voxels (``lung_mask`` of the preprocessed case) and the RefVI
live in the frame of the average CT. ``exhale`` (default) scores the exhale-frame map at those voxels as it is (off
by the average-to-exhale motion, a few mm at the lung base); ``average`` registers the exhale phase (moving) onto the
average CT (fixed; the mean of the phases) as well and samples the map there, V_avg(y) = V_ex(y + u_avg(y)) (a ratio,
so it is resampled, not Jacobian-weighted), at the cost of a second registration per patient.

A case's registration is computed once per setting and cached (:mod:`vent.io.registration`), so the second row reads
the first row's. The defect call is the ground truth's own (``vent.groundtruth.call_low_ventilation``): the lowest
``ground_truth.fraction`` of the clipped map by volume or cumulative ventilation, per patient; nothing is learned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vent.baselines.registration import RegistrationError, register_phases, registration_mask, warp_to_fixed
from vent.execution.threads import task_threads
from vent.io.registration import CaseRegistration

__all__ = [
    "HU_CLIP",
    "jacobian_ventilation",
    "jacobian_determinant",
    "hu_ventilation",
    "registration_key",
    "register_case",
    "RegistrationJob",
    "register_case_job",
    "ctvi_jacobian_fold",
    "ctvi_hu_fold",
]

log = logging.getLogger(__name__)

HU_CLIP = (-999.0, -1.0)
"""DIR-HU clips both HU to this range before dividing: the published [-1000, 0] (air to water), pulled in by 1 HU.

The denominator HU_ex (1000 + HU_in) is zero exactly at the published bounds (HU_ex = 0: no air at exhale; HU_in =
-1000: no tissue at inhale). One HU is far below CT noise (10-20 HU), so no voxel that can be told apart changes, every
value stays finite (|V| <= 1000 * 998 / (1 * 1), about 1e6, reached only by such degenerate voxels, which the ground
truth's outlier clip and the rank-based score then treat as the extremes they are) and no analysed voxel is dropped.
"""

REGISTRATION_VERSION = 1
"""Part of the cache key: raise it when a change of the registration code changes its result."""


def jacobian_determinant(displacement_zyx: np.ndarray, spacing_mm_zyx) -> np.ndarray:
    """det(I + grad u), u (3, Z, Y, X) in mm with grid-frame components (z, y, x).

    (grad u)_ij = d u_i / d x_j by central differences (``np.gradient``, one-sided at the edges) with the grid's
    spacing in mm; the determinant by cofactor expansion. Exact for an affine u.

    Returns:
        float32 (Z, Y, X).
    """
    u = np.asarray(displacement_zyx, dtype=np.float32)
    spacing = [float(s) for s in spacing_mm_zyx]
    g = [list(np.gradient(u[i], *spacing)) for i in range(3)]
    for i in range(3):
        g[i][i] += 1.0
    det = (g[0][0] * (g[1][1] * g[2][2] - g[1][2] * g[2][1])
           - g[0][1] * (g[1][0] * g[2][2] - g[1][2] * g[2][0])
           + g[0][2] * (g[1][0] * g[2][1] - g[1][1] * g[2][0]))
    return det.astype(np.float32)


def jacobian_ventilation(displacement_zyx: np.ndarray, spacing_mm_zyx) -> np.ndarray:
    """DIR-Jac: V = det(I + grad u) - 1, the local volume change from exhale to inhale (VAMPIRE.md; Reinhardt et al.
    2008, Med Image Anal 12:752). See :func:`jacobian_determinant` for the derivatives.

    Args:
        displacement_zyx: u (3, Z, Y, X) mm on the exhale grid, grid-frame components (z, y, x).
        spacing_mm_zyx: The grid spacing (z, y, x) mm (ignoring it would scale every derivative).

    Returns:
        float32 (Z, Y, X); 0 = no volume change, > 0 expansion, <= -1 a folded transform.
    """
    return jacobian_determinant(displacement_zyx, spacing_mm_zyx) - np.float32(1.0)


def hu_ventilation(hu_exhale: np.ndarray, hu_inhale_warped: np.ndarray) -> np.ndarray:
    """DIR-HU: V = 1000 (HU_in(T(x)) - HU_ex(x)) / (HU_ex(x) (1000 + HU_in(T(x)))) (Guerrero et al. 2006, Phys Med Biol
    51:777; Castillo et al. 2010, Phys Med Biol 55:4661), with both HU clipped to :data:`HU_CLIP` first.

    Example: HU_ex = -750, HU_in(T(x)) = -850 gives 1000 (-100) / (-750 * 150) = 0.889.

    Args:
        hu_exhale: HU_ex(x), the exhale CT (any shape).
        hu_inhale_warped: HU_in(T(x)), the inhale CT warped onto the exhale grid (same shape).

    Returns:
        float32, same shape.
    """
    low, high = HU_CLIP
    exhale = np.clip(np.asarray(hu_exhale, dtype=np.float64), low, high)
    inhale = np.clip(np.asarray(hu_inhale_warped, dtype=np.float64), low, high)
    return (1000.0 * (inhale - exhale) / (exhale * (1000.0 + inhale))).astype(np.float32)


def registration_key(params: Any) -> str:
    """The cache key of a registration setting: the first 16 hex digits of the fingerprint of every
    ``RegistrationParams`` field (each changes the registration) and :data:`REGISTRATION_VERSION`."""
    from vent.runner import fingerprint_of

    return fingerprint_of({"registration": params.model_dump(), "version": REGISTRATION_VERSION}, {})[:16]


def register_case(pre: Any, params: Any, key: str, threads: int | None = None) -> CaseRegistration:
    """Register one preprocessed case: inhale onto exhale, and with ``map_to: average`` exhale onto the average CT.

    Masks: the exhale phase's lung mask (resp. the analysed lung, for the average CT), dilated by
    ``params.mask_dilation_mm`` so the lung boundary lies inside (``registration_mask``).

    Args:
        pre: A ``vent.io.artifacts.PreprocessedCase`` (its ``attrs`` hold ``exhale_phase``, ``inhale_phase`` and the
            preprocess ``fingerprint``).
        params: ``RegistrationParams``.
        key: :func:`registration_key` of ``params``.
        threads: the task's CPU threads (``vent.execution.task_threads``; None = all cores).
    """
    exhale, inhale = int(pre.attrs["exhale_phase"]), int(pre.attrs["inhale_phase"])
    spacing = pre.grid.spacing_mm_zyx
    mask = registration_mask(pre.phase_masks_tzyx[exhale], spacing, params.mask_dilation_mm)
    try:
        main = register_phases(pre.ct_tzyx[exhale], pre.ct_tzyx[inhale], mask, pre.grid, params, threads)
    except RegistrationError as error:
        raise RegistrationError(
            f"{pre.case_id}: registering phase {inhale} (inhale) onto phase {exhale} (exhale) on its "
            f"{'x'.join(map(str, pre.grid.shape_zyx[::-1]))}-voxel grid: {error}"
        ) from None
    attrs: dict[str, Any] = {"backend": main.backend, "fixed_phase": exhale, "moving_phase": inhale,
                             "params": params.model_dump(), "details": main.details}
    to_average = None
    if params.map_to == "average":
        average_mask = registration_mask(pre.lung_mask_zyx, spacing, params.mask_dilation_mm)
        second = register_phases(pre.ct_tzyx.mean(axis=0), pre.ct_tzyx[exhale], average_mask, pre.grid, params,
                                 threads)
        to_average, attrs["seconds_to_average"] = second.displacement_zyx, second.seconds
    return CaseRegistration(pre.case_id, key, str(pre.attrs.get("fingerprint", "")), pre.grid,
                            main.displacement_zyx, main.warped_zyx, main.seconds, to_average, attrs)


def _ventilation_map(kind: str, pre: Any, registration: CaseRegistration) -> np.ndarray:
    """The ``dir_jac`` or ``dir_hu`` map of a case on its grid, in the frame ``map_to`` asks for (module docstring)."""
    spacing = pre.grid.spacing_mm_zyx
    if kind == "dir_jac":
        values = jacobian_ventilation(registration.displacement_zyx, spacing)
    else:
        values = hu_ventilation(pre.ct_tzyx[int(pre.attrs["exhale_phase"])], registration.warped_inhale_zyx)
    if registration.to_average_zyx is not None:
        values = warp_to_fixed(values, registration.to_average_zyx, spacing)
    return values


def _cached_or_registered(job: Any, pre: Any, params: Any, key: str) -> tuple[CaseRegistration, bool]:
    """The case's registration from the cache when it matches, else registered now and cached; (it, was cached)."""
    from vent.io import layout
    from vent.io.registration import read_case_registration, write_case_registration

    path = layout.registration_file(job.run_dir, key, pre.case_id)
    cached = read_case_registration(path, key, pre.case_id, str(pre.attrs.get("fingerprint", "")))
    if cached is not None:
        return cached, True
    registration = register_case(pre, params, key, task_threads(job.execution))
    write_case_registration(path, registration)
    log.info("%s: registered (%s) in %.1f s, cached at %s", pre.case_id, params.backend, registration.seconds, path)
    return registration, False


@dataclass(frozen=True)
class RegistrationJob:
    """One case's registration for the CT-ventilation rows, as a task of the train stage (``vent.execution``): the
    folds' ``ctvi_*`` trainers then read it from the cache, and two rows never register one case twice.

    Attributes:
        run_dir: The run folder (the preprocessed case is read, the registration cached, through ``vent.io.layout``).
        case: The patient.
        params: The ``RegistrationParams`` (every field changes the registration; the cache key hashes them).
        execution: The ``execution`` section (threads).
    """

    run_dir: Path
    case: str
    params: Any
    execution: Any

    @property
    def label(self) -> str:
        return f"registration {self.case}"


def register_case_job(job: RegistrationJob, progress: Any) -> dict[str, Any]:
    """Task function: the case's registration, from the cache when it matches, else registered and cached. Returns
    whether it was cached and the registration's own seconds."""
    from vent.io import layout
    from vent.io.artifacts import read_preprocessed_case

    del progress
    pre = read_preprocessed_case(layout.case_file(job.run_dir, "preprocess", job.case))
    registration, cached = _cached_or_registered(job, pre, job.params, registration_key(job.params))
    return {"cached": cached, "seconds": registration.seconds}


def _folding_fraction(pre: Any, registration: CaseRegistration) -> float:
    """Share of the exhale lung's voxels where the transform folds, det(I + grad u) <= 0."""
    lung = pre.phase_masks_tzyx[int(pre.attrs["exhale_phase"])] > 0
    det = jacobian_determinant(registration.displacement_zyx, pre.grid.spacing_mm_zyx)
    return float(np.mean(det[lung] <= 0)) if lung.any() else 0.0


def _predict_case(job: Any, pre: Any, registration: CaseRegistration, kind: str) -> Any:
    """The prediction contract of one case: the map at the analysed voxels and the ground truth's defect call."""
    from vent.groundtruth import call_low_ventilation
    from vent.io.predictions import Prediction

    coords = np.argwhere(pre.lung_mask_zyx > 0).astype(np.int32)
    values = _ventilation_map(kind, pre, registration)[tuple(coords.T)].astype(np.float32)
    truth = job.ground_truth
    score, threshold = call_low_ventilation(values, fraction=truth.fraction, method=truth.method,
                                            n_sd=truth.outlier_sd, tolerance=truth.tolerance,
                                            max_iterations=truth.max_iterations)
    return Prediction(pre.case_id, job.row, job.fold.index, score, threshold, coords, pre.grid, continuous=values,
                      continuous_name=kind)


def _setting_warnings(params: Any) -> list[str]:
    """Warnings about the setting itself (once per fold)."""
    if params.backend == "simpleitk" and params.bending_weight > 0:
        return [f"backend simpleitk has no bending-energy penalty: bending_weight {params.bending_weight} is not used "
                "(the B-spline grid alone regularises; the Jacobian map is noisier than elastix's)"]
    return []


def _ctvi_fold(job: Any, progress: Any, kind: str) -> Any:
    """One CT-ventilation row on one fold's test patients (``kind``: ``dir_jac`` or ``dir_hu``)."""
    from vent.io import layout
    from vent.io.artifacts import read_preprocessed_case
    from vent.models.jobs import FoldOutcome
    from vent.runner import NullProgress

    params = job.train.model_params(job.model)
    key = registration_key(params)
    predictions, seconds, cached, folding = [], {}, {}, {}
    warnings = _setting_warnings(params)
    with (progress or NullProgress()).task(f"{job.row} fold {job.fold.index} (registration)",
                                           total=len(job.fold.test)) as task:
        for case in job.fold.test:
            pre = read_preprocessed_case(layout.case_file(job.run_dir, "preprocess", case))
            registration, cached[case] = _cached_or_registered(job, pre, params, key)
            seconds[case] = registration.seconds + float(registration.attrs.get("seconds_to_average") or 0.0)
            folding[case] = _folding_fraction(pre, registration)
            if folding[case] > 0:
                warnings.append(f"{case}: the registration folds (det(I + grad u) <= 0) at {100 * folding[case]:.2f}% "
                                "of the exhale lung's voxels; the Jacobian there is not a volume change")
            predictions.append(_predict_case(job, pre, registration, kind))
            task.advance(1)
    record = {"ventilation": kind, "backend": params.backend, "registration_key": key,
              "registration_params": params.model_dump(), "registration_seconds": seconds,
              "registration_cached": cached, "folding_fraction": folding, "warnings": warnings}
    n_cached = sum(cached.values())
    summary = f"{kind} on {len(predictions)} test patient(s): {len(cached) - n_cached} registered, {n_cached} cached"
    return FoldOutcome(predictions=predictions, record=record, summary=summary)


def ctvi_jacobian_fold(job: Any, progress: Any) -> Any:
    """Registry trainer of ``ctvi_jac``: DIR-Jac (:func:`jacobian_ventilation`) on the fold's test patients.

    Reads ``preprocess/<case>.h5``, reads or writes ``train/registration/<key>/<case>.h5``; returns a
    ``vent.models.jobs.FoldOutcome`` whose record holds the backend, settings, registration seconds per patient,
    whether each came from the cache, the folding share per patient and warnings.
    """
    return _ctvi_fold(job, progress, "dir_jac")


def ctvi_hu_fold(job: Any, progress: Any) -> Any:
    """Registry trainer of ``ctvi_hu``: DIR-HU (:func:`hu_ventilation`); otherwise as :func:`ctvi_jacobian_fold`."""
    return _ctvi_fold(job, progress, "dir_hu")
