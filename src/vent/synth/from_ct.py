"""Semi-real 4DCT subjects: a real chest CT made to breathe, with planted defects and a RefVI on its own grid.

No public multi-phase 4DCT with a ventilation scan can be had offline, so tests and benchmarks on real texture take a
real breath-hold CT with its expert lung masks (e.g. NSCLC-Radiomics LUNG1-001) and make it breathe with the same
physical model as the synthetic cohort (``vent.synth``, steps 3-5), so real anatomy, vessels, noise and edges meet a
known ventilation:

1. The CT is block-averaged in-plane (2x2 by default, ~2 mm) and taken as the maximum-exhale reference X.
2. Defects: 1-3 smooth blobs inside the analysed field of view (FOV), scaled to cover 20-33% of its lung; inside
   them the local expansion is reduced by 70-95% and the parenchyma is denser (tissue fraction + 0.04-0.09, x 1040
   HU) and coarser. One *distractor* blob is as dense but ventilates normally (density alone does not mean defect).
3. Breathing: a strain field s (more at the base and posteriorly, reduced in defects) integrated into a displacement
   u with div u = s (``breathing.displacement_from_strain``), scaled so the diaphragm travels a drawn 15-30 mm
   (95th percentile of the cranio-caudal motion of the lowest 15 mm of lung). Phase p warps the reference by a_p u;
   parenchymal HU follows mass conservation, HU_p + 1000 = (HU_ref + 1000) / J_p; each phase gets independent
   correlated noise (12 HU). Phase masks are the expert masks moved with the same field.
4. The files start at maximum *inhalation* (the common 4DCT 0% convention), so a pipeline that assumes "file 1 is
   exhale" is caught.
5. RefVI: (J_inhale - 1) x lung x smooth gain at the time-averaged position, PSF-blurred (FWHM 8 mm), sampled on a
   4 mm grid with its own origin, Poisson-counted, two hot spots; 0 outside VentMask.

The FOV is cropped to the lower lung of one side (``below_mm`` under and ``slab_mm`` above the dome, the first
slice holding half the side's largest lung cross-section) so that a
cohort stays small enough for CI; ``slab_mm=None`` keeps the whole lung (full-size patients for benchmarks).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from vent.errors import ConfigError, DataError
from vent.synth.breathing import displacement_from_strain, inverse_displacement, jacobian_determinant, phase_amplitudes
from vent.synth.grids import Grid, correlated_noise, fractional_indices, grid_covering, resample_grid
from vent.synth.subject import _defect_blobs, _random_rotation
from vent.synth.ventilation import make_reference_ventilation
from vent.synth.writer import COMPLETE_MARKER, TRUTH_JSON, _write_image, _write_text, subject_folder_name

__all__ = ["SemiRealSettings", "make_semireal_subject", "write_semireal_cohort"]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SemiRealSettings:
    """How a real CT is made into a 4DCT subject (see the module docstring)."""

    n_phases: int = 5
    diaphragm_travel_mm: tuple[float, float] = (15.0, 30.0)
    slab_mm: float | None = 36.0
    below_mm: float = 30.0
    inplane_factor: int = 2
    model_spacing_mm: float = 4.0
    vent_spacing_mm: float = 4.0
    psf_fwhm_mm: float = 8.0
    mean_counts: float = 400.0
    phase_noise_hu: float = 12.0


def _block_average(ct_zyx: np.ndarray, lung_zyx: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """In-plane block average of the CT and the lung occupancy (factor x factor voxels)."""
    nz, ny, nx = ct_zyx.shape
    ny, nx = ny - ny % factor, nx - nx % factor

    def average(values: np.ndarray) -> np.ndarray:
        v = values[:, :ny, :nx].astype(np.float32)
        return v.reshape(nz, ny // factor, factor, nx // factor, factor).mean(axis=(2, 4))

    return average(ct_zyx), average(lung_zyx)


def _work_grid(image: sitk.Image, factor: int, shape_zyx: tuple[int, int, int]) -> Grid:
    if np.abs(np.asarray(image.GetDirection()) - np.eye(3).ravel()).max() > 1e-6:
        raise DataError("the semi-real generator needs a CT with an identity direction matrix")
    spacing = image.GetSpacing()
    origin = [o + 0.5 * (factor - 1) * s if axis < 2 else o for axis, (o, s) in enumerate(zip(image.GetOrigin(),
                                                                                               spacing))]
    return Grid(shape_zyx, (spacing[0] * factor, spacing[1] * factor, spacing[2]), tuple(float(v) for v in origin))


def _fov_box(lung_side: np.ndarray, grid: Grid, settings: SemiRealSettings) -> tuple[slice, slice, slice]:
    """Voxel box of the written FOV: the side's lung bounding box, cut to a slab above its lowest point."""
    inside = lung_side > 0.5
    points = np.argwhere(inside)
    low, high = points.min(axis=0), points.max(axis=0) + 1
    dz, dy, dx = grid.spacing_mm_zyx
    margin = np.array([int(np.ceil(settings.below_mm / dz)), int(np.ceil(15 / dy)), int(np.ceil(15 / dx))])
    if settings.slab_mm is not None:
        area = inside.sum(axis=(1, 2))
        base = int(np.argmax(area >= 0.5 * area.max()))  # the dome: first slice with half the largest area
        low[0], high[0] = base, min(high[0], base + int(np.ceil(settings.slab_mm / dz)))
    lo = np.maximum(low - margin, 0)
    hi = np.minimum(high + margin * np.array([0, 1, 1]), lung_side.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _sub_grid(grid: Grid, box: tuple[slice, slice, slice]) -> Grid:
    start = [s.start for s in box]
    origin_zyx = [o + s * k for o, s, k in zip(grid.origin_mm_zyx, grid.spacing_mm_zyx, start)]
    return Grid(tuple(s.stop - s.start for s in box), grid.spacing_mm_xyz, tuple(float(v) for v in origin_zyx[::-1]))


def _plant_blobs(rng, model: Grid, fov_lung: np.ndarray, n_blobs: int, fraction: float, noise: np.ndarray):
    """Blob memberships on the model grid covering ``fraction`` of the FOV lung (bisection on a common scale)."""
    candidates = np.argwhere(fov_lung)
    axes = model.axes_mm_zyx()
    picks = candidates[rng.choice(len(candidates), size=n_blobs, replace=False)]
    centres = np.array([[axes[a][p[a]] for a in range(3)] for p in picks])
    weights = rng.uniform(0.7, 1.3, (n_blobs, 1)) * rng.uniform(0.7, 1.3, (n_blobs, 3))
    rotations = [_random_rotation(rng) for _ in range(n_blobs)]
    mesh = model.mesh_mm_zyx()

    def blobs(scale: float) -> list[np.ndarray]:
        return _defect_blobs(centres, weights * scale, rotations, noise, *mesh)

    low, high = 2.0, 200.0
    for _ in range(25):
        middle = 0.5 * (low + high)
        covered = float(np.mean((np.max(blobs(middle), axis=0) > 0.5)[fov_lung]))
        low, high = (middle, high) if covered < fraction else (low, middle)
    return blobs(0.5 * (low + high))


def _sample(values: np.ndarray, index_zyx: np.ndarray, order: int = 1, cval: float | None = None) -> np.ndarray:
    mode = "nearest" if cval is None else "constant"
    return ndimage.map_coordinates(values, index_zyx, order=order, mode=mode, cval=cval or 0.0).astype(np.float32)


def make_semireal_subject(
    ct: sitk.Image, lung: sitk.Image, index: int, seed: int, settings: SemiRealSettings = SemiRealSettings()
) -> dict:
    """One semi-real subject in memory: ``{"phases", "phase_masks", "average_image", "average_mask", "vent_image",
    "vent_mask", "defect_mask", "truth"}`` (SimpleITK images, phases in file order, truth a JSON-ready dict)."""
    if settings.n_phases < 3:
        raise ConfigError(f"n_phases must be >= 3, got {settings.n_phases}")
    rng = np.random.default_rng([seed, index, 7])
    ct_zyx, occupancy = _block_average(
        sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(lung) > 0, settings.inplane_factor
    )
    work = _work_grid(ct, settings.inplane_factor, ct_zyx.shape)
    labels, n_parts = ndimage.label(occupancy > 0.5)
    if n_parts < 1:
        raise DataError("the lung mask is empty")
    sizes = ndimage.sum(np.ones_like(labels), labels, range(1, n_parts + 1))
    largest = np.argsort(-sizes)[:2] + 1
    side = int(rng.integers(0, len(largest)))
    side_mask = ndimage.binary_dilation(labels == largest[side], iterations=2) & (occupancy > 0)
    side_occupancy = occupancy * side_mask
    box = _fov_box(side_occupancy, work, settings)
    fov = _sub_grid(work, box)

    # Motion and defects on a coarse model grid covering the whole CT (the apex is needed to integrate the strain).
    low = np.array(work.origin_mm_zyx)
    high = low + (np.array(work.shape_zyx) - 1) * np.array(work.spacing_mm_zyx)
    model = grid_covering(low, high, (settings.model_spacing_mm,) * 3)
    lung_model = np.clip(resample_grid(ndimage.gaussian_filter(occupancy, 1.0), work, model), 0, 1)
    side_model = np.clip(resample_grid(ndimage.gaussian_filter(side_occupancy, 1.0), work, model), 0, 1)
    fz_lo, fz_hi = fov.origin_mm_zyx[0], fov.origin_mm_zyx[0] + (fov.shape_zyx[0] - 1) * fov.spacing_mm_zyx[0]
    z_model = model.mesh_mm_zyx()[0]
    fov_lung = (side_model > 0.5) & (z_model >= fz_lo + 4) & (z_model <= fz_hi - 4)
    shape_noise = correlated_noise(rng, model.shape_zyx, 2.5)
    n_defects = int(rng.integers(1, 4))
    defect_fraction = float(rng.uniform(0.20, 0.33))
    defect_blobs = _plant_blobs(rng, model, fov_lung, n_defects, defect_fraction, shape_noise)
    distractor = _plant_blobs(rng, model, fov_lung & (np.max(defect_blobs, axis=0) < 0.2), 1, 0.08, shape_noise)[0]
    reductions = rng.uniform(0.70, 0.95, n_defects)
    defect = np.clip(np.sum(defect_blobs, axis=0), 0, 1)
    reduction = np.clip(np.sum([b * r for b, r in zip(defect_blobs, reductions)], axis=0), 0, 0.95)
    density = defect * rng.uniform(0.04, 0.09) + distractor * rng.uniform(0.04, 0.09)

    z, y, _ = model.mesh_mm_zyx()
    lung_z = np.broadcast_to(z, model.shape_zyx)[lung_model > 0.5]
    y_all = np.broadcast_to(y, model.shape_zyx)[lung_model > 0.5]
    height = np.clip((z - lung_z.min()) / max(np.ptp(lung_z), 1.0), 0, 1)
    y_norm = np.clip((y - y_all.mean()) / max(y_all.std() * 2, 1.0), -1, 1)
    pattern = (1 + 0.35 * (1 - height)) * (1 + 0.30 * y_norm) * (1 + 0.10 * correlated_noise(rng, model.shape_zyx, 4))
    pattern = pattern / float(np.mean(pattern[lung_model > 0.5]))
    strain_unit = (pattern * (1 - reduction) * lung_model).astype(np.float32)
    f_z = float(rng.uniform(0.5, 0.65))
    fractions = (f_z, 0.6 * (1 - f_z), 0.4 * (1 - f_z))
    x_lung = np.broadcast_to(model.mesh_mm_zyx()[2], model.shape_zyx)[lung_model > 0.5]
    displacement = displacement_from_strain(
        strain_unit, lung_model, model, midline_x_mm=float(np.median(x_lung)), axis_fractions_zyx=fractions,
        smoothing_mm=25.0,
    )
    below = np.clip((lung_z.min() - z) / 60.0, 0, None)
    displacement *= np.exp(-(below**2)).astype(np.float32)[None]
    base = (lung_model > 0.5) & (z <= lung_z.min() + 15.0)
    travel_unit = float(np.percentile(-displacement[0][base], 95))
    travel = float(rng.uniform(*settings.diaphragm_travel_mm))
    mean_strain = travel / max(travel_unit, 1e-6)
    displacement *= mean_strain

    # Reference (exhale) CT with denser, coarser parenchyma in defects and distractor.
    texture = correlated_noise(rng, work.shape_zyx, (0.7, 1.5, 1.5))
    density_work = resample_grid(density, model, work) * (1.0 + 0.6 * texture)
    reference = ct_zyx + 1040.0 * density_work * occupancy

    amplitudes = phase_amplitudes(settings.n_phases, rng)
    inhale = int(np.argmax(amplitudes))
    fov_index = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij")).astype(np.float32)
    fov_model = np.stack(np.meshgrid(*fractional_indices(model, fov), indexing="ij")).astype(np.float32)
    spacing_work = np.asarray(work.spacing_mm_zyx, dtype=np.float32).reshape(3, 1, 1, 1)
    spacing_model = np.asarray(model.spacing_mm_zyx, dtype=np.float32).reshape(3, 1, 1, 1)

    def warp(amplitude: float) -> tuple[np.ndarray, np.ndarray]:
        """(work index of X, model index of X, J at X) for the FOV voxels at this amplitude."""
        backward = inverse_displacement(displacement, model, amplitude)
        w = np.stack([_sample(backward[i], fov_model) for i in range(3)])
        return fov_index - w / spacing_work, fov_model - w / spacing_model

    phases, masks = [], []
    for p, amplitude in enumerate(amplitudes):
        work_x, model_x = warp(float(amplitude))
        jac = _sample(jacobian_determinant(displacement, model.spacing_mm_zyx, float(amplitude)), model_x)
        lung_x = np.clip(_sample(side_occupancy, work_x, cval=0.0), 0, 1)
        hu_x = _sample(reference, work_x)
        hu = lung_x * ((hu_x + 1000.0) / np.maximum(jac, 0.5) - 1000.0) + (1 - lung_x) * hu_x
        hu += settings.phase_noise_hu * correlated_noise(rng, fov.shape_zyx, 0.7)
        phases.append(np.clip(np.round(hu), -1024, 3071).astype(np.int16))
        masks.append((lung_x >= 0.5).astype(np.uint8))
    mean_amplitude = float(np.mean(amplitudes))
    work_x, model_x = warp(mean_amplitude)
    j_inhale = jacobian_determinant(displacement, model.spacing_mm_zyx, 1.0)
    local_ventilation = np.clip(_sample(j_inhale, model_x) - 1.0, 0, None)
    average_occupancy = np.clip(_sample(side_occupancy, work_x, cval=0.0), 0, 1)
    average_mask = (np.mean(masks, axis=0) >= 0.5).astype(np.uint8)
    truth_defect = ((_sample(defect, model_x) > 0.5) & (average_mask > 0)).astype(np.uint8)

    gain = 1.0 + 0.1 * correlated_noise(rng, fov.shape_zyx, 8.0)
    activity = local_ventilation * average_occupancy * gain
    offset = tuple(float(v) for v in rng.uniform(0, settings.vent_spacing_mm, 3))
    fov_low = np.array(fov.origin_mm_zyx)
    fov_high = fov_low + (np.array(fov.shape_zyx) - 1) * np.array(fov.spacing_mm_zyx)
    vent_grid = grid_covering(fov_low - 8, fov_high + 8, (settings.vent_spacing_mm,) * 3, offset)
    centroid = np.argwhere(average_mask).mean(axis=0) * np.array(fov.spacing_mm_zyx) + fov_low
    vent, vent_mask, hot_spots = make_reference_ventilation(
        rng, activity, average_occupancy, fov, vent_grid, settings.psf_fwhm_mm, settings.mean_counts,
        [tuple(centroid)], n_hot_spots=2,
    )

    start = inhale  # files begin at maximum inhalation
    order = [(start + k) % settings.n_phases for k in range(settings.n_phases)]
    volumes = [float(masks[i].sum()) * float(np.prod(fov.spacing_mm_xyz)) / 1000 for i in order]
    truth = {
        "generator": "vent.synth.from_ct",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "index": index,
        "settings": asdict(settings),
        "lung_side_component": side,
        "diaphragm_travel_mm": travel,
        "mean_strain_healthy": mean_strain,
        "amplitudes_file_order": [float(amplitudes[i]) for i in order],
        "exhale_file_phase": order.index(int(np.argmin(amplitudes))) + 1,
        "inhale_file_phase": 1,
        "lung_volume_ml_file_order": volumes,
        "n_defects": n_defects,
        "defect_fraction_target": defect_fraction,
        "defect_fraction": float(truth_defect[average_mask > 0].mean()),
        "expansion_reductions": reductions.tolist(),
        "hot_spots": hot_spots,
    }
    return {
        "phases": [fov.to_image(phases[i]) for i in order],
        "phase_masks": [fov.to_image(masks[i]) for i in order],
        "average_image": fov.to_image(np.round(np.mean(phases, axis=0)).astype(np.int16)),
        "average_mask": fov.to_image(average_mask),
        "vent_image": vent_grid.to_image(vent.astype(np.float32)),
        "vent_mask": vent_grid.to_image(vent_mask.astype(np.uint8)),
        "defect_mask": fov.to_image(truth_defect),
        "truth": truth,
    }


_CtAndLung = tuple[sitk.Image, sitk.Image]


@dataclass(frozen=True)
class _SubjectJob:
    """One semi-real subject to make and write (a picklable task of :func:`vent.execution.run_tasks`)."""

    label: str
    ct_path: Path
    lung_mask_paths: tuple[Path, ...]
    folder: Path
    index: int
    seed: int
    settings: SemiRealSettings
    marker: str


def write_semireal_cohort(
    ct_path: Path, lung_mask_paths: list[Path], out_dir: Path, n_cases: int, seed: int = 0,
    settings: SemiRealSettings = SemiRealSettings(), workers: int = 1,
) -> list[Path]:
    """Write Subject_01..Subject_NN (VAMPIRE layout) made from one real CT; complete subjects are skipped.

    Args:
        ct_path: The real CT (HU), identity direction.
        lung_mask_paths: One or more lung masks on the CT grid (united; e.g. left and right lung).
        out_dir: Study folder to write.
        n_cases: Subjects to write; subject k depends only on (seed, k, settings), so the files are the same
            for any ``workers``.
        seed: Cohort seed.
        settings: Generator settings.
        workers: Subjects made at once, in a process pool (``vent.execution``'s local backend, the cores shared
            among them); 1 = one at a time in this process.
    """
    from vent.config import ExecutionConfig
    from vent.execution import run_tasks
    from vent.runner import NullProgress

    ct_path, mask_paths = Path(ct_path), tuple(Path(p) for p in lung_mask_paths)
    _read_ct_and_lung(ct_path, mask_paths)  # bad input fails here, before any task starts
    marker = json.dumps({"generator_version": GENERATOR_VERSION, "seed": seed, "settings": asdict(settings)})
    folders = [Path(out_dir) / subject_folder_name(index) for index in range(1, n_cases + 1)]
    jobs = [
        _SubjectJob(f"semi-real {folder.name}", ct_path, mask_paths, folder, index, seed, settings, marker)
        for index, folder in enumerate(folders, start=1)
        if not ((folder / COMPLETE_MARKER).is_file() and (folder / COMPLETE_MARKER).read_text() == marker)
    ]
    execution = ExecutionConfig(backend="local" if workers > 1 else "serial", workers=workers)
    for result in run_tasks(execution, _write_subject_task, jobs, NullProgress()):
        logger.info("wrote %s (diaphragm travel %.1f mm)", result.job.folder, result.value)
    return folders


def _write_subject_task(job: _SubjectJob, progress: object) -> float:
    """Make and write one subject (``.complete`` last); returns its diaphragm travel in mm."""
    ct, lung = _read_ct_and_lung(job.ct_path, job.lung_mask_paths)
    subject = make_semireal_subject(ct, lung, job.index, job.seed, job.settings)
    folder = job.folder
    for number, (image, mask) in enumerate(zip(subject["phases"], subject["phase_masks"]), start=1):
        _write_image(image, folder / "CT" / f"PhaseImage_{number:02d}.mha")
        _write_image(mask, folder / "CT" / f"PhaseMask_{number:02d}.mha")
    _write_image(subject["average_image"], folder / "CT" / "AverageImage.mha")
    _write_image(subject["average_mask"], folder / "CT" / "AverageMask.mha")
    _write_image(subject["vent_image"], folder / "GT" / "VentImage.mha")
    _write_image(subject["vent_mask"], folder / "GT" / "VentMask.mha")
    _write_image(subject["defect_mask"], folder / "synthetic_truth" / "DefectMask.mha")
    _write_text(json.dumps(subject["truth"], indent=2), folder / TRUTH_JSON)
    _write_text(job.marker, folder / COMPLETE_MARKER)
    return float(subject["truth"]["diaphragm_travel_mm"])


def _read_ct_and_lung(ct_path: Path, lung_mask_paths: tuple[Path, ...]) -> _CtAndLung:
    """The real CT and the union of its lung masks, checked (identity direction, masks on the CT's grid); read once
    per process for all the subjects it makes (again when a file's size or modification time changed)."""
    stamps = tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
                   for p in (ct_path, *lung_mask_paths))
    return _read_ct_and_lung_once(ct_path, lung_mask_paths, stamps)


@functools.lru_cache(maxsize=1)
def _read_ct_and_lung_once(ct_path: Path, lung_mask_paths: tuple[Path, ...], stamps: tuple) -> _CtAndLung:
    from vent.io.images import grid_of, read_ct, read_lung_mask

    ct = read_ct(ct_path, "real CT (--from-ct)")
    if np.abs(np.asarray(ct.GetDirection()) - np.eye(3).ravel()).max() > 1e-6:
        raise DataError(f"{ct_path} has direction {ct.GetDirection()}; the semi-real generator needs an identity "
                        "direction matrix (resample the CT onto an axis-aligned grid first)")
    lung = None
    for path in lung_mask_paths:
        mask, _ = read_lung_mask(path, "lung mask (--lung-mask)")
        a, b = grid_of(mask), grid_of(ct)
        geometry_a = a.spacing_mm_xyz + a.origin_mm_xyz + a.direction
        geometry_b = b.spacing_mm_xyz + b.origin_mm_xyz + b.direction
        if a.size_xyz != b.size_xyz or not np.allclose(geometry_a, geometry_b, atol=1e-3):
            raise DataError(f"lung mask {path} is not on the grid of {ct_path}; give masks on the CT's own grid")
        mask = mask > 0
        mask.CopyInformation(ct)
        lung = mask if lung is None else (lung | mask)
    return ct, lung
