"""Stage ``preprocess``: read each subject in the VAMPIRE layout, resample to 2 mm, derive ground-truth defects.

Reads: ``data.root`` (VAMPIRE layout; a synthetic cohort is generated there first when ``data.synthetic`` is set).
Writes: ``preprocess/<case>.h5`` (layout in ``vent.io.artifacts``), ``preprocess/cohort.csv`` (one row per case:
phases, lung volume per phase, analysed voxels, defect fraction, threshold) and ``preprocess/excluded.json``.
Config: ``preprocess`` (and ``data``).

All arrays of a subject are resampled in physical space onto one grid: the average CT's grid (the first phase's when
there is no average CT) at ``preprocess.spacing_mm``; CT linearly, masks by linear interpolation of the 0/1 mask
thresholded at 0.5, the RefVI linearly. Then everything is cropped to the lungs' bounding box plus a margin.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from vent.config import GroundTruthConfig, PreprocessConfig, RunConfig, SegmentationConfig
from vent.errors import DataError
from vent.groundtruth import DefectResult, derive_defects
from vent.io import layout
from vent.io.artifacts import PreprocessedCase, read_attrs, write_preprocessed_case
from vent.io.atomic import write_json, write_text
from vent.io.checks import Findings
from vent.io.hashing import file_sha256
from vent.io.images import Grid, grid_of, make_isotropic_grid, read_ct, read_image, read_lung_mask, resample_to_grid
from vent.io.refvi import resample_refvi
from vent.io.vampire import (
    SubjectFiles,
    check_duplicate_subjects,
    check_subject_headers,
    choose_subjects,
    discover_subjects,
    expected_refvi,
    find_subject_files,
)
from vent.runner import RunContext
from vent.stages.base import PerCaseStage

__all__ = [
    "PreprocessStage",
    "ensure_data",
    "cohort_subjects",
    "subject_files",
    "check_cohort",
    "check_subject_voxels",
    "preprocess_subject",
]

log = logging.getLogger(__name__)


def ensure_data(config: RunConfig, echo=lambda message: None, progress: Any = None) -> None:
    """Generate the synthetic cohort into ``data.root`` if the config asks for one and it is not complete."""
    synthetic = config.data.synthetic
    if synthetic is None:
        return
    from vent.synth import write_synthetic_cohort
    from vent.synth.writer import cohort_is_complete

    root = config.data.root
    if cohort_is_complete(root, synthetic.cases):
        return
    echo(
        f"[data] generating a synthetic {synthetic.modality.upper()}-like cohort ({synthetic.cases} cases, "
        f"size {synthetic.size}) in {root}"
    )
    write_synthetic_cohort(
        root, n_cases=synthetic.cases, modality=synthetic.modality, size=synthetic.size, seed=synthetic.seed
    )


def cohort_subjects(config: RunConfig) -> dict[str, SubjectFiles]:
    """``{case_id: files}`` for the configured subjects (file layout checked, no voxels read): from the VAMPIRE
    layout under ``data.root``, or from the manifest ``data.manifest`` (``vent.io.manifest``)."""
    data = config.data
    subjects = data.subjects
    if data.manifest is not None:
        from vent.io.manifest import read_manifest

        listed = read_manifest(data.manifest)
        ids = choose_subjects(list(listed), subjects, data.exclude, str(data.manifest))
        return {case: listed[case] for case in ids}
    if subjects is None and data.synthetic is not None:
        subjects = [f"Subject_{i:02d}" for i in range(1, data.synthetic.cases + 1)]
    ids = discover_subjects(data.root, subjects, data.exclude)
    return {case: find_subject_files(data.root, case) for case in ids}


def subject_files(config: RunConfig, case: str) -> SubjectFiles:
    """The files of one configured subject, as ``cohort_subjects`` lists them, without listing the others."""
    data = config.data
    if data.manifest is not None:
        from vent.io.manifest import read_manifest

        return read_manifest(data.manifest)[case]
    return find_subject_files(data.root, case)


def check_cohort(
    subjects: dict[str, SubjectFiles],
    sha256: Callable[[Path], str] = file_sha256,
    require_reference: bool = True,
    segmentation: SegmentationConfig | None = None,
    findings: Findings | None = None,
) -> list[str]:
    """The checks made before any voxel is read, for ``vent validate`` and ``vent run`` alike; returns warnings.

    Every subject's headers (phase count, at least 3 phases, one grid for all its phases and masks), one phase count
    for the cohort, and no patient under two folders (``vent.io.vampire.check_duplicate_subjects``).

    Args:
        subjects: ``{case_id: files}`` from ``cohort_subjects``.
        sha256: a file hasher; pass the run's cache (``RunContext.hashes().sha256``) to hash each file once.
        require_reference: every case needs a RefVI (training does; ``vent predict`` does not).
        segmentation: ``preprocess.segmentation`` (a case without masks is an error under ``when: never``).
        findings: collect the problems here (``vent validate``) instead of raising them.

    Raises:
        DataError: naming every file (or both folders) at fault, when ``findings`` is None.
    """
    own = findings is None
    findings = Findings() if own else findings
    n_before = len(findings.warnings)
    counts = [len(files.phase_images) for files in subjects.values()]
    expected = max(sorted(set(counts)), key=counts.count)  # the most common count: the odd subjects are named
    for files in subjects.values():
        check_subject_headers(files, expected_phases=expected, findings=findings)
        if require_reference and files.vent_image is None:
            findings.error(
                f"reference ventilation image missing for {files.case_id}: expected "
                + (str(expected_refvi(files.folder)) if files.source is None
                   else f"a 'refvi' row in {files.source}")
                + f"; training needs one per case: add it, or leave {files.case_id} out with data.exclude and a reason "
                "(`vent predict` applies a trained model to a case without)"
            )
        if not files.has_masks and segmentation is not None and segmentation.when == "never":
            findings.error(
                f"{files.case_id} has no lung masks and preprocess.segmentation.when is 'never'; give PhaseMask_NN "
                "files (or manifest masks), or set preprocess.segmentation.when: missing"
            )
    findings.attempt(check_duplicate_subjects, subjects, sha256)
    if own:
        findings.raise_errors()
    return findings.warnings[n_before:]


def _read_mask(path: Path, what: str) -> sitk.Image:
    """A lung mask read under the mask rule of ``vent.io.checks`` (0/1, or 0/1/2 labels reported as a warning)."""
    image, warning = read_lung_mask(path, what)
    if warning:
        log.warning(warning)
    return image


MIN_LUNG_ML = 200.0
"""Below this lung volume (ml) a mask is reported as small: an adult lung pair holds 3000-6000 ml, and even the
study's partial fields of view hold more; a smaller one is a slab, a child, or a wrong mask."""

MIN_REFVI_OVERLAP = 0.5
"""Least share of the CT lung mask's voxels at which the RefVI (its lung mask, else its positive voxels) must be
present; below it the RefVI lies outside the lung (another patient, or a registration or export error)."""


def check_subject_voxels(files: SubjectFiles, findings: Findings | None = None, min_voxels: int = 0) -> list[str]:
    """Read every file of a subject, voxels included, with the checks ``preprocess_subject`` makes while reading.

    This is what ``vent validate`` adds to ``check_cohort``: it catches truncated files, NaN, implausible HU, masks
    that break the mask rule or are tiny (fewer than ``min_voxels`` 2 mm voxels: an error; under ``MIN_LUNG_ML``: a
    warning), a RefVI that is all zeros or lies outside the lung (``MIN_REFVI_OVERLAP``), without resampling the
    CT. Every file is read even after a problem, so one pass lists them all. Returns warnings.

    Raises:
        DataError: naming each file at fault (only when ``findings`` is None).
    """
    own = findings is None
    findings = Findings() if own else findings
    n_before = len(findings.warnings)
    masks = files.phase_masks if files.has_masks else [None] * len(files.phase_images)
    pairs = list(zip(files.phase_images, masks))
    if files.average_image is not None:
        pairs.append((files.average_image, files.average_mask))
    first_mask, volumes_ml = None, []
    for image_path, mask_path in pairs:
        mask = None
        if mask_path is not None:
            read = findings.attempt(read_lung_mask, mask_path, "lung mask")
            if read is not None:
                mask, warning = read
                findings.warn(warning)
                volumes_ml.append(_check_mask_size(mask, mask_path, min_voxels, findings))
                first_mask = first_mask or mask
        findings.attempt(read_ct, image_path, "CT image", mask)
    small = [v for v in volumes_ml if 0 < v < MIN_LUNG_ML]
    if small:
        findings.warn(f"{files.case_id}: {len(small)} lung mask(s) hold only {min(small):.0f}-{max(small):.0f} ml "
                      "(an adult lung pair: 3000-6000 ml); a partial field of view, a child, or a wrong mask?")
    if files.vent_image is not None:
        if files.vent_mask is not None:
            read = findings.attempt(read_lung_mask, files.vent_mask, "RefVI lung mask")
            findings.warn(read[1] if read else None)
        refvi = findings.attempt(_read_refvi, files)
        if refvi is not None:
            findings.attempt(_check_refvi_in_lung, files, refvi, first_mask)
    if own:
        findings.raise_errors()
    return findings.warnings[n_before:]


def _check_mask_size(mask: sitk.Image, path: Path, min_voxels: int, findings: Findings) -> float:
    """A lung mask smaller than ``min_voxels`` 2 mm voxels is an error (returns 0); else returns its volume in ml
    (the caller warns once per subject under ``MIN_LUNG_ML``)."""
    volume_ml = float(sitk.GetArrayViewFromImage(mask).astype(bool).sum()) * float(np.prod(mask.GetSpacing())) / 1e3
    if volume_ml < min_voxels * 8.0 / 1000.0:
        findings.error(
            f"lung mask {path} holds {volume_ml:.1f} ml, fewer than preprocess.min_lung_voxels={min_voxels} voxels of "
            "2 mm; is it the lung mask of this image? Fix it, or leave the subject out with data.exclude"
        )
        return 0.0
    return volume_ml


def _check_refvi_in_lung(files: SubjectFiles, refvi: sitk.Image, lung: sitk.Image | None) -> None:
    """DataError when the RefVI is all zeros or covers less than ``MIN_REFVI_OVERLAP`` of the CT lung mask."""
    values = sitk.GetArrayViewFromImage(refvi)
    if not (values > 0).any():
        raise DataError(
            f"reference ventilation image {files.vent_image} holds no positive value (all zeros); export it again "
            f"or leave {files.case_id} out with data.exclude"
        )
    if lung is None:
        return
    support = read_image(files.vent_mask, "RefVI lung mask") > 0 if files.vent_mask is not None else refvi > 0
    on_ct = sitk.Resample(sitk.Cast(support, sitk.sitkUInt8), lung, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    inside = sitk.GetArrayViewFromImage(lung) > 0
    share = float((sitk.GetArrayViewFromImage(on_ct)[inside] > 0).mean())
    if share < MIN_REFVI_OVERLAP:
        raise DataError(
            f"reference ventilation image {files.vent_image} covers only {share:.0%} of the CT lung mask of "
            f"{files.case_id} in physical space (at least {MIN_REFVI_OVERLAP:.0%} expected): the RefVI lies outside "
            "the lung. Check its origin and direction against the CT, or leave the subject out with data.exclude"
        )


def _crop_box(mask_zyx: np.ndarray, margin_vox: tuple[int, int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    nonzero = np.argwhere(mask_zyx)
    lo = np.maximum(nonzero.min(axis=0) - np.array(margin_vox), 0)
    hi = np.minimum(nonzero.max(axis=0) + 1 + np.array(margin_vox), mask_zyx.shape)
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi - lo)


def _read_refvi(files: SubjectFiles) -> sitk.Image:
    """The RefVI with NaN/inf outside its lung mask set to 0 (some exports mark background so); inside is an error."""
    image = read_image(files.vent_image, "reference ventilation image", allow_nan=True)
    values = sitk.GetArrayFromImage(image)
    bad = ~np.isfinite(values)
    if not bad.any():
        return image
    if files.vent_mask is None:
        raise DataError(
            f"reference ventilation image {files.vent_image} holds {int(bad.sum())} NaN/inf values and "
            f"there is no GT/VentMask to show they are outside the lung; fix the file"
        )
    inside = sitk.GetArrayFromImage(read_image(files.vent_mask, "RefVI lung mask")) > 0
    if inside.shape != values.shape:
        raise DataError(
            f"{files.vent_mask} has shape {inside.shape[::-1]} but {files.vent_image} has {values.shape[::-1]}"
        )
    if (bad & inside).any():
        raise DataError(
            f"reference ventilation image {files.vent_image} holds {int((bad & inside).sum())} NaN/inf "
            f"values inside the lung mask {files.vent_mask}; fix the file or exclude {files.case_id}"
        )
    log.info("%s: %d NaN/inf RefVI values outside the lung set to 0", files.case_id, int(bad.sum()))
    clean = sitk.GetImageFromArray(np.where(bad, 0.0, values).astype(np.float32))
    clean.CopyInformation(image)
    return clean


def _reference_grid(files: SubjectFiles, spacing_mm: Any) -> tuple[Grid, sitk.Image | None, Grid]:
    """The target grid (the average CT's, else the first phase's, at ``spacing_mm``), the average mask image and
    the native grid it came from."""
    reference_path = files.average_image or files.phase_images[0]
    average_mask_image = None if files.average_mask is None else _read_mask(files.average_mask, "average lung mask")
    reference = read_ct(reference_path, "reference CT", average_mask_image if files.average_image else None)
    native = grid_of(reference)
    return make_isotropic_grid(native, spacing_mm), average_mask_image, native


def _read_phases(
    files: SubjectFiles, grid: Grid, segmentation: SegmentationConfig
) -> tuple[list[np.ndarray], list[np.ndarray], list[float], dict[str, Any]]:
    """Each phase's CT (linear, -1024 HU outside) and lung mask on ``grid``, its lung volume in ml, and how the masks
    were made (given, or segmented: ``preprocess.segmentation``)."""
    names = [str(p) for p in files.phase_images]
    if files.has_masks and segmentation.when != "always":
        mask_images = [_read_mask(path, "phase lung mask") for path in files.phase_masks]
        images = [read_ct(path, "phase image", mask) for path, mask in zip(files.phase_images, mask_images)]
        origin = {"lung_masks": "given"}
    else:
        from vent.segmentation import segment_case

        images = [read_ct(path, "phase image") for path in files.phase_images]
        average = read_ct(files.average_image, "average CT") if files.average_image is not None else None
        mask_images, facts = segment_case(images, average, segmentation, names)
        origin = {"lung_masks": "segmented", "segmentation": facts}
        log.info("%s: lungs segmented (%s, %s)", files.case_id, segmentation.backend, segmentation.mode)
    ct, phase_masks, volumes_ml = [], [], []
    voxel_ml = float(np.prod(grid.spacing_mm_xyz)) / 1000.0
    for image, mask_image, name in zip(images, mask_images, names):
        ct.append(resample_to_grid(image, grid, "linear", default=-1024.0))
        mask = resample_to_grid(mask_image, grid, "mask")
        if not mask.any():
            raise DataError(f"lung mask of {name} is empty on the {grid.spacing_mm_xyz} mm grid; check the mask or "
                            f"exclude {files.case_id}")
        phase_masks.append(mask)
        volumes_ml.append(float(mask.sum()) * voxel_ml)
    return ct, phase_masks, volumes_ml, origin


def _average_mask(
    files: SubjectFiles, average_mask_image: sitk.Image | None, grid: Grid, phase_masks: list[np.ndarray],
    mask_origin: dict[str, Any],
) -> np.ndarray:
    """The average lung mask on ``grid``, or the phases' majority vote (mean >= 0.5) when the subject has none or
    its masks were segmented."""
    if files.average_mask is None or mask_origin["lung_masks"] == "segmented":
        return (np.mean(phase_masks, axis=0) >= 0.5).astype(np.uint8)
    average_mask = resample_to_grid(average_mask_image, grid, "mask")
    if not average_mask.any():
        raise DataError(f"lung mask {files.average_mask} is empty; check the file or exclude {files.case_id}")
    return average_mask


def _refvi_on_grid(
    files: SubjectFiles, grid: Grid, interpolation: str, like: np.ndarray, lung_image: sitk.Image | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The RefVI (NaN where no RefVI lung voxel is near) and its lung mask (all ones when absent) on ``grid``; a
    subject without a RefVI (``vent predict``) gets zeros. The RefVI is first checked as ``vent validate`` does: not
    all zeros, and over the CT lung mask ``lung_image`` (native grid; None: not checked)."""
    if files.vent_image is None:
        return np.zeros(like.shape, np.float32), np.ones_like(like)
    refvi_image = _read_refvi(files)
    _check_refvi_in_lung(files, refvi_image, lung_image)
    vent_mask_image = _read_mask(files.vent_mask, "RefVI lung mask") if files.vent_mask is not None else None
    refvi = resample_refvi(refvi_image, vent_mask_image, grid, interpolation)
    if vent_mask_image is None:
        return refvi, np.ones_like(like)
    return refvi, resample_to_grid(vent_mask_image, grid, "mask")


def _analysis_mask(
    choice: str, average_mask: np.ndarray, vent_mask: np.ndarray, phase_masks: list[np.ndarray], refvi: np.ndarray,
    case_id: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The analysed lung (``preprocess.analysis_mask``) less voxels without RefVI, and those voxels (both (Z, Y, X))."""
    if choice == "average":
        lung = average_mask
    elif choice == "average_and_vent":
        lung = average_mask & vent_mask
    else:
        lung = np.max(phase_masks, axis=0)
    no_refvi = lung.astype(bool) & ~np.isfinite(refvi)
    if no_refvi.any():
        log.warning("%s: %d analysed voxels have no RefVI lung voxel near them and are left out", case_id,
                    int(no_refvi.sum()))
        lung = (lung.astype(bool) & ~no_refvi).astype(np.uint8)
    return lung, no_refvi


def _check_lung_size(n_lung: int, files: SubjectFiles, settings: PreprocessConfig) -> None:
    """Raise DataError when fewer than ``preprocess.min_lung_voxels`` voxels are analysed."""
    if n_lung < settings.min_lung_voxels:
        raise DataError(
            f"{files.case_id}: only {n_lung} analysed lung voxels at {settings.spacing_mm} mm (analysis_mask="
            f"{settings.analysis_mask}); do the CT mask ({_mask_name(files)}) and the RefVI mask ({files.vent_mask}) "
            f"overlap? Minimum is preprocess.min_lung_voxels={settings.min_lung_voxels}"
        )


def _mask_name(files: SubjectFiles) -> str:
    if files.average_mask is not None:
        return str(files.average_mask)
    return str(files.phase_masks[0]) if files.has_masks else "segmented"


def _phase_order(volumes_ml: list[float], phase_order: str) -> tuple[list[int], int, int]:
    """(order of the phases, exhale index, inhale index): file order, or rotated to start at maximum exhale."""
    order = list(range(len(volumes_ml)))
    exhale, inhale = int(np.argmin(volumes_ml)), int(np.argmax(volumes_ml))
    if phase_order == "from_max_exhale":
        order = order[exhale:] + order[:exhale]
    return order, exhale, inhale


def _crop_window(
    phase_masks: list[np.ndarray], lung: np.ndarray, grid: Grid, margin_mm: float
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[slice, ...]]:
    """(start, shape, slices) of the bounding box of every phase's lung and the analysed lung, plus the margin."""
    union = np.max(phase_masks, axis=0) | lung
    margin = tuple(int(np.ceil(margin_mm / s)) for s in grid.spacing_mm_zyx)
    start, shape = _crop_box(union, margin)
    return start, shape, tuple(slice(a, a + n) for a, n in zip(start, shape))


def _ground_truth(
    refvi_zyx: np.ndarray, lung_zyx: np.ndarray, ground_truth: GroundTruthConfig, case_id: str, has_reference: bool
) -> DefectResult | None:
    """``derive_defects`` under ``preprocess.ground_truth``, warning when the outlier clipping did not converge;
    None for a subject without a RefVI."""
    if not has_reference:
        return None
    gt = derive_defects(
        refvi_zyx,
        lung_zyx,
        fraction=ground_truth.fraction,
        method=ground_truth.method,
        n_sd=ground_truth.outlier_sd,
        tolerance=ground_truth.tolerance,
        max_iterations=ground_truth.max_iterations,
        median_filter=ground_truth.median_filter,
        case_id=case_id,
    )
    if not gt.clip.converged:
        log.warning(
            "%s: ground-truth outlier clipping stopped at preprocess.ground_truth.max_iterations=%d before the "
            "threshold moved by less than %g; recorded as gt_clip_converged=false", case_id,
            ground_truth.max_iterations, ground_truth.tolerance,
        )
    return gt


def _case_attrs(
    files: SubjectFiles, settings: PreprocessConfig, order: list[int], volumes_ml: list[float],
    phases: tuple[int, int], crop: tuple[tuple[int, ...], Grid], n_lung: int, gt: DefectResult | None,
    n_without_refvi: int,
) -> dict[str, Any]:
    """The case's HDF5 attributes: phase files and order, volumes, crop, ground-truth method and outcome (none
    without a RefVI: ``has_reference`` False)."""
    exhale, inhale = phases
    start, grid = crop
    ground_truth = settings.ground_truth
    common = {
        "phase_files": [str(files.phase_images[i]) for i in order],
        "phase_order": [int(files.phase_numbers[i]) for i in order],
        "lung_volume_ml": [volumes_ml[i] for i in order],
        "inhale_phase": order.index(inhale),
        "exhale_phase": order.index(exhale),
        "crop_start_zyx": list(start),
        "uncropped_size_xyz": list(grid.size_xyz),
        "n_lung_voxels": n_lung,
        "analysis_mask": settings.analysis_mask,
        "source_folder": str(files.folder),
        "has_reference": gt is not None,
        "modality": files.modality,
    }
    if gt is None:
        return common
    return {
        **common,
        "gt_method": ground_truth.method,
        "gt_fraction": ground_truth.fraction,
        "gt_threshold": gt.threshold,
        "gt_clip_lower": gt.clip.lower,
        "gt_clip_upper": gt.clip.upper,
        "gt_clip_iterations": gt.clip.iterations,
        "gt_outliers": gt.clip.n_outliers,
        "gt_clip_converged": gt.clip.converged,
        "refvi_interpolation": ground_truth.refvi_interpolation,
        "n_lung_without_refvi": n_without_refvi,
        "defect_fraction": gt.defect_fraction,
    }


def preprocess_subject(files: SubjectFiles, config: RunConfig) -> PreprocessedCase:
    """Read, check, resample and crop one subject and derive its ground truth (pure of any run folder).

    A subject without lung masks has them segmented (``preprocess.segmentation``); one without a RefVI (only
    ``vent predict`` passes one) gets no ground truth: zero RefVI and defects, ``has_reference`` False.
    """
    settings = config.preprocess
    grid, average_mask_image, native = _reference_grid(files, settings.spacing_mm)
    ct, phase_masks, volumes_ml, mask_origin = _read_phases(files, grid, settings.segmentation)
    average_mask = _average_mask(files, average_mask_image, grid, phase_masks, mask_origin)
    lung_image = average_mask_image
    if lung_image is None and files.has_masks and mask_origin["lung_masks"] == "given":
        lung_image = _read_mask(files.phase_masks[0], "phase lung mask")
    refvi, vent_mask = _refvi_on_grid(
        files, grid, settings.ground_truth.refvi_interpolation, average_mask, lung_image
    )
    lung, no_refvi = _analysis_mask(settings.analysis_mask, average_mask, vent_mask, phase_masks, refvi, files.case_id)
    refvi = np.nan_to_num(refvi, nan=0.0)
    _check_lung_size(int(lung.sum()), files, settings)
    order, exhale, inhale = _phase_order(volumes_ml, config.data.phase_order)
    start, shape, window = _crop_window(phase_masks, lung, grid, settings.crop_margin_mm)
    cropped_lung = lung[window]
    gt = _ground_truth(refvi[window], cropped_lung, settings.ground_truth, files.case_id, files.vent_image is not None)
    attrs = _case_attrs(
        files, settings, order, volumes_ml, (exhale, inhale), (start, grid), int(cropped_lung.sum()), gt,
        int(no_refvi.sum()),
    )
    return PreprocessedCase(
        case_id=files.case_id,
        ct_tzyx=np.stack([ct[i][window] for i in order]).astype(np.float32),
        phase_masks_tzyx=np.stack([phase_masks[i][window] for i in order]).astype(np.uint8),
        lung_mask_zyx=cropped_lung.astype(np.uint8),
        refvi_zyx=refvi[window].astype(np.float32),
        defect_zyx=np.zeros_like(cropped_lung, np.uint8) if gt is None else gt.defect_zyx,
        grid=grid.crop(start, shape),
        attrs={
            **attrs,
            **{k: json.dumps(v) if isinstance(v, dict) else v for k, v in mask_origin.items()},
            "source_spacing_mm": list(native.spacing_mm_xyz),
            "source_size_xyz": list(native.size_xyz),
        },
    )


class PreprocessStage(PerCaseStage):
    name = "preprocess"
    sections = ("data",)
    version = "2"

    def case_inputs(self, ctx: RunContext) -> dict[str, Any]:
        subjects = cohort_subjects(ctx.config)
        hashes = ctx.hashes()
        data = ctx.config.data
        base = data.root if data.root is not None else data.manifest.parent

        def shown(path: Path) -> str:  # relative to the cohort, so a moved cohort keeps its fingerprints
            return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

        return {
            case: {shown(p): hashes.sha256(p) for p in files.all_files()} for case, files in subjects.items()
        }

    def check(self, ctx: RunContext, voxels: bool = False, findings: Findings | None = None) -> list[str]:
        """The data checks of ``vent validate``; ``run`` makes the same ones. Returns warnings.

        Args:
            ctx: the run context (its hash cache is shared with the fingerprints).
            voxels: also read every file's voxels (``check_subject_voxels``); ``run`` does that while reading each
                subject instead.
            findings: collect every problem here instead of raising (``vent validate``).

        Raises:
            DataError: naming every file (or both folders) at fault, when ``findings`` is None.
        """
        own = findings is None
        findings = Findings() if own else findings
        n_before = len(findings.warnings)
        subjects = cohort_subjects(ctx.config)
        settings = ctx.config.preprocess
        check_cohort(subjects, ctx.hashes().sha256, segmentation=settings.segmentation, findings=findings)
        if voxels:
            for files in subjects.values():
                check_subject_voxels(files, findings, min_voxels=settings.min_lung_voxels)
        if own:
            findings.raise_errors()
        return findings.warnings[n_before:]

    def process_case(self, ctx: RunContext, case: str, out_path: Path, fingerprint: str) -> dict[str, Any]:
        files = subject_files(ctx.config, case)  # by name: a worker process has only the job (vent.execution)
        result = preprocess_subject(files, ctx.config)
        write_preprocessed_case(out_path, result, fingerprint)
        return {"n_lung_voxels": result.attrs["n_lung_voxels"], "defect_fraction": result.attrs["defect_fraction"]}

    def run(self, ctx: RunContext, plan) -> dict[str, Any]:
        subjects = cohort_subjects(ctx.config)
        segmentation = ctx.config.preprocess.segmentation
        for warning in check_cohort(subjects, ctx.hashes().sha256, segmentation=segmentation):
            ctx.echo(f"[{self.name}] warning: {warning}")
        return super().run(ctx, plan)

    def finish(self, ctx: RunContext, stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
        rows = []
        for case in stats:
            attrs = read_attrs(self.case_path(ctx, case))
            rows.append(
                {
                    "case": case,
                    "n_phases": len(attrs["phase_order"]),
                    "n_lung_voxels": attrs["n_lung_voxels"],
                    "lung_volume_ml": ";".join(f"{v:.0f}" for v in attrs["lung_volume_ml"]),
                    "inhale_phase": attrs["inhale_phase"],
                    "exhale_phase": attrs["exhale_phase"],
                    "defect_fraction": round(float(attrs["defect_fraction"]), 4),
                    "gt_threshold": float(attrs["gt_threshold"]),
                    "gt_outliers": attrs["gt_outliers"],
                }
            )
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text(layout.cohort_file(ctx.run_dir), buffer.getvalue())
        write_json(layout.excluded_file(ctx.run_dir), ctx.config.data.exclude)
        return {"cohort.csv": "one row per case", "excluded.json": "excluded subjects with reasons"}
