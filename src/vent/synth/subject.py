"""One synthetic 4DCT subject with planted ventilation defects, built in memory.

See the package docstring (``vent.synth``) for the generative model. This module knows nothing of files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from vent.errors import ConfigError
from vent.synth import anatomy as anat
from vent.synth.breathing import displacement_from_strain, inverse_displacement, jacobian_determinant, phase_amplitudes
from vent.synth.grids import (
    Grid,
    box_partial_volume,
    correlated_noise,
    fractional_indices,
    grid_covering,
    interpolate_separable,
)
from vent.synth.ventilation import make_reference_ventilation

logger = logging.getLogger(__name__)

Modality = Literal["pet", "spect"]
Size = Literal["tiny", "demo", "full"]

#: Version of the generative model; stored with every subject so that a changed model is never mixed with old data.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class ModalityPreset:
    """Acquisition settings of one study type (VAMPIRE Galligas PET or DTPA SPECT)."""

    n_phases: int
    ct_spacing_mm_xyz: tuple[float, float, float]
    vent_spacing_mm: float
    psf_fwhm_mm: tuple[float, float]
    mean_counts: tuple[float, float]
    code: int


MODALITIES: dict[str, ModalityPreset] = {
    "pet": ModalityPreset(5, (1.07, 1.07, 5.0), 4.0, (7.0, 9.0), (300.0, 600.0), 1),
    "spect": ModalityPreset(10, (0.97, 0.97, 2.5), 4.42, (12.0, 15.0), (60.0, 150.0), 2),
}

#: Anatomy scale (in-plane, cranio-caudal) relative to an adult, and tree depth, per size.
SIZES: dict[str, dict] = {
    "tiny": {"scale_xy": 0.14, "scale_z": 0.21, "vessel_generations": 3, "airway_generations": 2, "code": 1},
    "demo": {"scale_xy": 0.30, "scale_z": 0.41, "vessel_generations": 5, "airway_generations": 3, "code": 2},
    "full": {"scale_xy": 1.00, "scale_z": 1.00, "vessel_generations": 7, "airway_generations": 4, "code": 3},
}

#: Bounds on the number of voxels of the coarse model grid on which motion and smooth fields are computed (a quarter
#: of the CT grid's voxel count, clipped to these bounds).
MODEL_GRID_VOXELS = (60_000, 150_000)


@dataclass
class DefectRegion:
    """One planted ventilation defect: a smooth, randomly oriented and shape-perturbed ellipsoidal blob.

    Attributes:
        center_mm_xyz: Physical centre at maximum exhalation (mm).
        radii_mm: Semi-axes of the ellipsoid (mm) before shape perturbation.
        rotation: 3x3 rotation matrix (rows: blob axes in (z, y, x)).
        expansion_reduction: Fraction by which local expansion (J - 1) is reduced at the blob centre.
        tissue_fraction_increase: Added parenchymal tissue fraction at the centre (x1040 HU).
        volume_ml: Volume of the blob inside the lung at exhale (mL).
    """

    center_mm_xyz: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    rotation: list[list[float]]
    expansion_reduction: float
    tissue_fraction_increase: float
    volume_ml: float = 0.0


@dataclass
class SyntheticSubject:
    """A synthetic subject: the images written in the VAMPIRE layout plus the planted truth.

    Attributes:
        subject_id: e.g. ``"Subject_01"``.
        modality: ``"pet"`` or ``"spect"``.
        size: ``"tiny"``, ``"demo"`` or ``"full"``.
        phases: 4DCT phases (int16 HU) on the CT grid, phase 1 = maximum exhalation.
        phase_masks: Lung mask (uint8) per phase.
        average_image: Time-averaged CT (int16 HU).
        average_mask: Lung mask (uint8) of the time-averaged CT.
        vent_image: RefVI (float32, counts) on its own grid, 0 outside ``vent_mask``.
        vent_mask: Lung mask (uint8) on the RefVI grid.
        defect_mask: Planted defects (uint8) on the CT grid at the time-averaged position, within ``average_mask``.
        local_ventilation: J_inhale - 1 per voxel (float32) on the CT grid at the time-averaged position, before
            PSF blur, gain and noise; 0 outside the lungs.
        defects: The planted defect regions.
        truth: JSON-serialisable parameters and measured figures (see ``synthetic_truth.json``).
    """

    subject_id: str
    modality: str
    size: str
    phases: list[sitk.Image]
    phase_masks: list[sitk.Image]
    average_image: sitk.Image
    average_mask: sitk.Image
    vent_image: sitk.Image
    vent_mask: sitk.Image
    defect_mask: sitk.Image
    local_ventilation: sitk.Image
    defects: list[DefectRegion] = field(default_factory=list)
    truth: dict = field(default_factory=dict)


def validate_request(modality: str, size: str, seed: int, index: int | None = None) -> None:
    """Raise ConfigError for an unknown modality or size, a negative seed or a subject index outside 1..99."""
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be one of {sorted(MODALITIES)}, got {modality!r}")
    if size not in SIZES:
        raise ConfigError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if index is not None and not (1 <= index <= 99):
        raise ConfigError(f"subject index must be in 1..99 (Subject_01..Subject_99), got {index!r}")


def subject_rngs(index: int, modality: str, size: str, seed: int) -> dict[str, np.random.Generator]:
    """Independent random streams for one subject, depending only on (seed, index, modality, size)."""
    sequence = np.random.SeedSequence([int(seed), int(index), MODALITIES[modality].code, SIZES[size]["code"]])
    names = ["anatomy", "trees", "defects", "texture", "breathing", "ct_noise", "vent"]
    return {name: np.random.default_rng(child) for name, child in zip(names, sequence.spawn(len(names)))}


def _model_grid(ct_grid: Grid) -> Grid:
    """Isotropic coarse grid over the CT field of view (voxel count: see MODEL_GRID_VOXELS)."""
    extent = np.array(ct_grid.shape_zyx) * np.array(ct_grid.spacing_mm_zyx)
    n_voxels = float(np.clip(np.prod(ct_grid.shape_zyx) / 4.0, *MODEL_GRID_VOXELS))
    spacing = float(np.cbrt(np.prod(extent) / n_voxels))
    low = np.array(ct_grid.origin_mm_zyx) - spacing
    high = low + extent + 2 * spacing
    return grid_covering(low, high, (spacing, spacing, spacing))


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * values))).astype(np.float32)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _defect_blobs(
    centers_zyx: np.ndarray, radii_zyx: np.ndarray, rotations: list[np.ndarray], shape_noise: np.ndarray, z, y, x,
    edge: float = 0.10,
) -> list[np.ndarray]:
    """Soft membership D_i in [0, 1] of each blob: sigmoid((1 - rho_i + 0.3 eta) / edge).

    rho_i = |R_i (X - c_i) / r_i| is the normalised ellipsoidal radius and eta a smooth standardised noise field that
    perturbs the blob shapes.
    """
    blobs = []
    for center, radii, rotation in zip(centers_zyx, radii_zyx, rotations):
        d = (z - center[0], y - center[1], x - center[2])
        rho2 = 0
        for axis in range(3):
            projected = rotation[axis, 0] * d[0] + rotation[axis, 1] * d[1] + rotation[axis, 2] * d[2]
            rho2 = rho2 + (projected / radii[axis]) ** 2
        blobs.append(_sigmoid((1.0 - np.sqrt(rho2) + 0.3 * shape_noise) / edge))
    return blobs


@dataclass
class _Frame:
    """Where a subject lives: its anatomy, local origin, CT grid and coarse model grid (internal)."""

    anatomy: anat.Anatomy
    center_mm_zyx: np.ndarray
    ct_grid: Grid
    model_grid: Grid

    def local_mesh(self, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open mesh of local coordinates (mm from the anatomical centre) of ``grid``'s voxel centres."""
        z, y, x = grid.mesh_mm_zyx()
        c = self.center_mm_zyx
        return z - c[0], y - c[1], x - c[2]

    def lung_occupancy(self, grid: Grid) -> np.ndarray:
        """Partial-volume lung occupancy at exhale on ``grid``."""
        distance = anat.lung_signed_distance(self.anatomy, *self.local_mesh(grid))
        return box_partial_volume(np.broadcast_to(distance, grid.shape_zyx).astype(np.float32), grid.spacing_mm_zyx)

    def smooth_noise(self, rng: np.random.Generator, correlation_mm: float) -> np.ndarray:
        """Standardised noise on the model grid, correlation length scaled with the anatomy (mm at adult size)."""
        sigma = correlation_mm * self.anatomy.scale_iso / self.model_grid.spacing_mm_zyx[0] + 1.0
        return correlated_noise(rng, self.model_grid.shape_zyx, sigma)


@dataclass
class _PlantedDefects:
    """Parameters of the defect blobs (local mm) and their shape-perturbation noise on the model grid (internal)."""

    centers_zyx: np.ndarray
    radii_zyx: np.ndarray
    rotations: list[np.ndarray]
    reductions: np.ndarray
    densities: np.ndarray
    shape_noise_model: np.ndarray
    target_fraction: float
    regions: list[DefectRegion]

    def memberships(self, frame: _Frame, grid: Grid) -> list[np.ndarray]:
        """Soft membership of each blob on ``grid`` (see ``_defect_blobs``)."""
        noise = self.shape_noise_model
        if grid is not frame.model_grid:
            noise = interpolate_separable(noise, *fractional_indices(frame.model_grid, grid))
        return _defect_blobs(self.centers_zyx, self.radii_zyx, self.rotations, noise, *frame.local_mesh(grid))


def _combine_blobs(blobs: list[np.ndarray], per_blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union membership D = clip(sum_i D_i, 0, 1) and D times the membership-weighted mean of a per-blob value."""
    total = np.sum(blobs, axis=0)
    union = np.clip(total, 0.0, 1.0)
    weighted = np.sum([b * v for b, v in zip(blobs, per_blob)], axis=0) / np.maximum(total, 1e-6)
    return union.astype(np.float32), (weighted * union).astype(np.float32)


def _make_frame(rng: np.random.Generator, preset: ModalityPreset, size_cfg: dict) -> _Frame:
    """Draw the anatomy and place it at a non-trivial physical position; build the CT and model grids."""
    anatomy = anat.sample_anatomy(rng, size_cfg["scale_xy"], size_cfg["scale_z"])
    center_zyx = np.array([rng.uniform(-260.0, -180.0), rng.uniform(-40.0, 10.0), rng.uniform(-15.0, 15.0)])
    low, high = anatomy.extent_local_zyx()
    ct_offset = rng.uniform(0.0, 1.0, 3) * np.array(preset.ct_spacing_mm_xyz)
    ct_grid = grid_covering(center_zyx + low, center_zyx + high, preset.ct_spacing_mm_xyz, tuple(ct_offset))
    return _Frame(anatomy, center_zyx, ct_grid, _model_grid(ct_grid))


def _plant_defects(rng: np.random.Generator, frame: _Frame, lung_model: np.ndarray) -> _PlantedDefects:
    """Draw 1-4 defect blobs and scale them (bisection) so that they cover a target 20-33% of the lung at exhale."""
    model = frame.model_grid
    n_defects = int(rng.integers(1, 5))
    target_fraction = float(rng.uniform(0.20, 0.33))
    lung_voxels = np.argwhere(lung_model > 0.9)
    axes = model.axes_mm_zyx()
    picks = lung_voxels[rng.choice(len(lung_voxels), size=n_defects, replace=False)]
    centers = np.array([[axes[a][p[a]] for a in range(3)] for p in picks]) - frame.center_mm_zyx
    weights = rng.uniform(0.6, 1.4, (n_defects, 1)) * rng.uniform(0.6, 1.4, (n_defects, 3))
    rotations = [_random_rotation(rng) for _ in range(n_defects)]
    reductions = rng.uniform(0.7, 0.95, n_defects)
    densities = rng.uniform(0.04, 0.10, n_defects)
    shape_noise = frame.smooth_noise(rng, 10.0)
    in_lung = lung_model > 0.5
    mesh = frame.local_mesh(model)

    def covered_fraction(scale_mm: float) -> float:
        union = np.max(_defect_blobs(centers, weights * scale_mm, rotations, shape_noise, *mesh), axis=0) > 0.5
        return float(np.mean(union[in_lung]))

    low, high = 1.0 * frame.anatomy.scale_iso, 300.0 * frame.anatomy.scale_iso
    for _ in range(30):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if covered_fraction(middle) < target_fraction else (low, middle)
    radii = weights * 0.5 * (low + high)
    blobs = _defect_blobs(centers, radii, rotations, shape_noise, *mesh)
    regions = [
        DefectRegion(
            center_mm_xyz=tuple(float(v) for v in (centers[i] + frame.center_mm_zyx)[::-1]),
            radii_mm=tuple(float(v) for v in radii[i]),
            rotation=rotations[i].tolist(),
            expansion_reduction=float(reductions[i]),
            tissue_fraction_increase=float(densities[i]),
            volume_ml=float(np.sum((blobs[i] > 0.5) & in_lung)) * model.voxel_volume_ml,
        )
        for i in range(n_defects)
    ]
    return _PlantedDefects(centers, radii, rotations, reductions, densities, shape_noise, target_fraction, regions)


def _breathing_motion(
    rng: np.random.Generator, frame: _Frame, lung_model: np.ndarray, reduction_model: np.ndarray, n_phases: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Phase amplitudes, displacement at max inhale (model grid) and the breathing parameters drawn.

    Healthy strain s = s_mean * pattern, pattern = (1 + 0.35 (1 - h)) (1 + 0.30 y_n) (1 + 0.1 eta) normalised to mean 1
    over the lung (more ventilation at the base, h = height fraction, and dependently, y_n = normalised
    antero-posterior position of a supine subject); defects multiply it by (1 - reduction).
    """
    anatomy, model = frame.anatomy, frame.model_grid
    amplitudes = phase_amplitudes(n_phases, rng)
    mean_strain = float(rng.uniform(0.12, 0.20))
    f_z = float(rng.uniform(0.50, 0.65))
    fractions = (f_z, 0.6 * (1.0 - f_z), 0.4 * (1.0 - f_z))
    z, y, _ = frame.local_mesh(model)
    height = np.clip(z / anatomy.lung_height, 0.0, 1.0)
    y_norm = np.clip((y - anatomy.lung_center_y) / anatomy.lung_radius_y, -1.0, 1.0)
    pattern = (1.0 + 0.35 * (1.0 - height)) * (1.0 + 0.30 * y_norm) * (1.0 + 0.10 * frame.smooth_noise(rng, 15.0))
    pattern = pattern / float(np.mean(pattern[lung_model > 0.5]))
    strain = (mean_strain * pattern * (1.0 - reduction_model) * lung_model).astype(np.float32)
    displacement = displacement_from_strain(
        strain, lung_model, model, midline_x_mm=float(frame.center_mm_zyx[2]), axis_fractions_zyx=fractions,
        smoothing_mm=25.0 * anatomy.scale_iso,
    )
    # The abdomen far below the lungs moves less: Gaussian taper below the lung base.
    below = np.clip(-z / (0.25 * anatomy.lung_height), 0.0, None)
    displacement *= np.exp(-(below**2)).astype(np.float32)[None]
    parameters = {"mean_strain_healthy": mean_strain, "axis_strain_fractions_zyx": list(fractions)}
    return amplitudes, displacement, parameters


def _reference_attenuation(
    rngs: dict[str, np.random.Generator], frame: _Frame, size_cfg: dict, lung_ct: np.ndarray,
    defect_ct: np.ndarray, density_ct: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attenuation A = HU + 1000 at exhale on the CT grid, split into compressible parenchyma and the rest.

    parenchyma = lung (1 - vessels) (1 - airways) tau A_tissue, with tau the healthy tissue fraction plus, in defects,
    delta_tau (1 + 0.6 coarse texture); rest = ((1 - lung) body + vessels A_blood) (1 - airways) + airway walls.

    Returns:
        (parenchyma, rest, trapping): float32 arrays; trapping is the zero-mean patch field inside defects that
        modulates parenchyma towards exhalation (heterogeneous air trapping).
    """
    anatomy, ct_grid, center = frame.anatomy, frame.ct_grid, frame.center_mm_zyx
    spacing = ct_grid.spacing_mm_zyx
    rng = rngs["trees"]
    root = anatomy.scale_xy**0.75
    vessels, airways = [], []
    for side in (-1, 1):
        for root_radius in (5.0 * root, 4.5 * root):  # arterial and venous trees
            vessels += anat.grow_tree(rng, anatomy, side, root_radius, size_cfg["vessel_generations"], 0.35)
        airways += anat.grow_tree(rng, anatomy, side, 4.5 * root, size_cfg["airway_generations"], 0.6)
    airways += anat.central_airways(anatomy)
    vessel_occ = anat.rasterize_tubes(vessels, ct_grid, center) * lung_ct
    airway_outer = anat.rasterize_tubes(airways, ct_grid, center, radius_factor=1.2, radius_offset_mm=0.3 * root)
    airway_lumen = anat.rasterize_tubes(airways, ct_grid, center)

    rng = rngs["texture"]
    coarse = 2.5 * max(anatomy.scale_iso, 0.5)
    texture = correlated_noise(rng, ct_grid.shape_zyx, [1.2 / s for s in spacing])
    coarse_texture = correlated_noise(rng, ct_grid.shape_zyx, [coarse / s for s in spacing])
    patch_noise = correlated_noise(rng, ct_grid.shape_zyx, [0.8 * coarse / s for s in spacing])
    tau = anat.parenchyma_tissue_fraction(anatomy, ct_grid, center, texture)
    tau = np.clip(tau + density_ct * (1.0 + 0.6 * coarse_texture), 0.02, 0.9)
    del texture, coarse_texture
    trapping = defect_ct * patch_noise
    del patch_noise
    body = anat.body_attenuation(anatomy, ct_grid, center)
    keep = 1.0 - airway_outer
    parenchyma = (lung_ct * (1.0 - vessel_occ) * keep * tau * anat.A_LUNG_TISSUE).astype(np.float32)
    walls = (airway_outer - airway_lumen) * anat.A_AIRWAY_WALL
    rest = (((1.0 - lung_ct) * body + vessel_occ * anat.A_BLOOD) * keep + walls).astype(np.float32)
    return parenchyma, rest, trapping


class _Warper:
    """Backward warping of reference-frame (exhale) fields on the CT grid to a breathing amplitude (internal)."""

    def __init__(self, frame: _Frame, displacement: np.ndarray):
        self.frame = frame
        self.displacement = displacement
        self.ct_index_in_model = fractional_indices(frame.model_grid, frame.ct_grid)

    def reference_indices(self, amplitude: float) -> np.ndarray:
        """Fractional CT-grid indices (3, nz, ny, nx) of the reference point X(x) = x - w(x) of every CT voxel x."""
        ct_grid = self.frame.ct_grid
        backward = inverse_displacement(self.displacement, self.frame.model_grid, amplitude)
        indices = np.empty((3,) + ct_grid.shape_zyx, dtype=np.float32)
        for axis, coordinates in enumerate(ct_grid.axes_mm_zyx()):
            shape = [1, 1, 1]
            shape[axis] = -1
            position = coordinates.reshape(shape) - interpolate_separable(backward[axis], *self.ct_index_in_model)
            indices[axis] = (position - ct_grid.origin_mm_zyx[axis]) / ct_grid.spacing_mm_zyx[axis]
        return indices

    def model_indices(self, ct_indices: np.ndarray) -> np.ndarray:
        """Convert fractional CT-grid indices into fractional model-grid indices (same physical points)."""
        ct_grid, model = self.frame.ct_grid, self.frame.model_grid
        out = np.empty_like(ct_indices)
        for axis in range(3):
            physical = ct_grid.origin_mm_zyx[axis] + ct_indices[axis] * ct_grid.spacing_mm_zyx[axis]
            out[axis] = (physical - model.origin_mm_zyx[axis]) / model.spacing_mm_zyx[axis]
        return out

    @staticmethod
    def sample(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Trilinear sampling of ``values`` at fractional indices (border values outside)."""
        return ndimage.map_coordinates(values, indices, order=1, mode="nearest").astype(np.float32)


def make_synthetic_subject(
    index: int, modality: Modality = "pet", size: Size = "demo", seed: int = 0
) -> SyntheticSubject:
    """Generate one synthetic subject in memory (deterministic in (index, modality, size, seed)).

    Args:
        index: Subject number, 1..99 (``Subject_XX``).
        modality: ``"pet"`` (5 phases, 1.07x1.07x5 mm CT) or ``"spect"`` (10 phases, 0.97x0.97x2.5 mm CT).
        size: ``"tiny"`` (~2-3k lung voxels at 2 mm), ``"demo"`` (~20k) or ``"full"`` (adult lungs, ~600k).
        seed: Cohort seed.

    Returns:
        The subject (images, masks, RefVI and planted truth).

    Raises:
        ConfigError: For an unknown modality or size, a negative seed or an index outside 1..99.
    """
    validate_request(modality, size, seed, index)
    preset, size_cfg = MODALITIES[modality], SIZES[size]
    rngs = subject_rngs(index, modality, size, seed)
    subject_id = f"Subject_{index:02d}"

    frame = _make_frame(rngs["anatomy"], preset, size_cfg)
    anatomy, ct_grid, model = frame.anatomy, frame.ct_grid, frame.model_grid
    lung_model = frame.lung_occupancy(model)
    lung_ct = frame.lung_occupancy(ct_grid)

    planted = _plant_defects(rngs["defects"], frame, lung_model)
    _, reduction_model = _combine_blobs(planted.memberships(frame, model), planted.reductions)
    defect_ct, density_ct = _combine_blobs(planted.memberships(frame, ct_grid), planted.densities)

    amplitudes, displacement, breathing = _breathing_motion(
        rngs["breathing"], frame, lung_model, reduction_model, preset.n_phases
    )
    jacobian_inhale = jacobian_determinant(displacement, model.spacing_mm_zyx, 1.0)
    parenchyma, rest, trapping = _reference_attenuation(rngs, frame, size_cfg, lung_ct, defect_ct, density_ct)

    # Phases: mass-conserving compression 1/J in the reference frame, then backward warp, CT blur and noise.
    warper = _Warper(frame, displacement)
    rng_noise = rngs["ct_noise"]
    noise_sd = float(rng_noise.uniform(20.0, 40.0))
    trapping_strength = 0.12
    spacing = ct_grid.spacing_mm_zyx
    psf_sigma = [0.0, 0.45 / spacing[1], 0.45 / spacing[2]]
    noise_sigma = [0.4, 0.6 / spacing[1], 0.6 / spacing[2]]
    phases, phase_masks, mask_volumes, mean_lung_hu = [], [], [], []
    hu_sum = np.zeros(ct_grid.shape_zyx, dtype=np.float64)
    for amplitude in amplitudes:
        jacobian = jacobian_determinant(displacement, model.spacing_mm_zyx, float(amplitude))
        compression = interpolate_separable(1.0 / np.maximum(jacobian, 0.2), *warper.ct_index_in_model)
        attenuation = parenchyma * compression * (1.0 + trapping_strength * (1.0 - amplitude) * trapping) + rest
        lung_phase = lung_ct
        if amplitude > 0:
            indices = warper.reference_indices(float(amplitude))
            attenuation, lung_phase = warper.sample(attenuation, indices), warper.sample(lung_ct, indices)
        attenuation = ndimage.gaussian_filter(attenuation, psf_sigma)
        noise = correlated_noise(rng_noise, ct_grid.shape_zyx, noise_sigma) * noise_sd
        hu = np.clip(np.rint(attenuation - 1000.0 + noise), -1024, 3071)
        hu_sum += hu
        mask = (lung_phase >= 0.5).astype(np.uint8)
        phases.append(ct_grid.to_image(hu.astype(np.int16)))
        phase_masks.append(ct_grid.to_image(mask))
        mask_volumes.append(float(mask.sum()) * ct_grid.voxel_volume_ml)
        mean_lung_hu.append(float(hu[mask > 0].mean()))
    average_hu = np.rint(hu_sum / len(amplitudes)).astype(np.int16)
    del hu_sum, parenchyma, rest, trapping

    # Time-averaged position: lung mask, planted defects and local ventilation J_in - 1 (before blur).
    mean_amplitude = float(np.mean(amplitudes))
    indices = warper.reference_indices(mean_amplitude)
    lung_avg = warper.sample(lung_ct, indices)
    average_mask = (lung_avg >= 0.5).astype(np.uint8)
    defect_mask = ((warper.sample(defect_ct, indices) >= 0.5) & (average_mask > 0)).astype(np.uint8)
    model_indices = warper.model_indices(indices)
    del indices
    local_vent = warper.sample(np.maximum(jacobian_inhale - 1.0, 0.0), model_indices) * (average_mask > 0)
    gain = warper.sample(1.0 + 0.10 * frame.smooth_noise(rngs["vent"], 20.0), model_indices)
    del model_indices

    # RefVI on its own, coarser grid around the lungs.
    rng = rngs["vent"]
    resolution_factor = float(np.sqrt(anatomy.scale_iso))  # scaled-down anatomy gets a proportionally sharper scan
    fwhm = float(rng.uniform(*preset.psf_fwhm_mm)) * resolution_factor
    vent_spacing = max(2.5, preset.vent_spacing_mm * resolution_factor)
    ct_axes = ct_grid.axes_mm_zyx()
    lung_index = np.argwhere(average_mask)
    lung_low = np.array([ct_axes[a][lung_index[:, a].min()] for a in range(3)])
    lung_high = np.array([ct_axes[a][lung_index[:, a].max()] for a in range(3)])
    margin = 1.5 * fwhm + vent_spacing
    vent_offset = tuple(rng.uniform(-0.5, 0.5, 3) * vent_spacing)
    vent_grid = grid_covering(lung_low - margin, lung_high + margin, (vent_spacing,) * 3, vent_offset)
    hila = [tuple(np.asarray(anatomy.hilum_zyx[side]) + frame.center_mm_zyx) for side in (-1, 1)]
    mean_counts = float(rng.uniform(*preset.mean_counts))
    vent, vent_mask, hot_spots = make_reference_ventilation(
        rng, local_vent * lung_avg * gain, lung_avg, ct_grid, vent_grid, fwhm, mean_counts, hila,
        int(rng.integers(1, 5)),
    )

    # Measured figures for synthetic_truth.json.
    in_lung_model = lung_model > 0.5
    caudal = -displacement[0]
    apex_region = in_lung_model & (frame.local_mesh(model)[0] > 0.85 * anatomy.lung_height)
    healthy = (average_mask > 0) & (defect_mask == 0)
    truth = {
        "generator_version": GENERATOR_VERSION,
        "subject_id": subject_id,
        "modality": modality,
        "size": size,
        "seed": int(seed),
        "index": int(index),
        "n_phases": preset.n_phases,
        "phase_amplitudes": [float(a) for a in amplitudes],
        "inhale_phase": int(np.argmax(amplitudes)) + 1,
        "exhale_phase": 1,
        "mean_amplitude": mean_amplitude,
        "ct_spacing_mm_xyz": list(ct_grid.spacing_mm_xyz),
        "ct_origin_mm_xyz": list(ct_grid.origin_mm_xyz),
        "ct_shape_zyx": list(ct_grid.shape_zyx),
        "vent_spacing_mm_xyz": list(vent_grid.spacing_mm_xyz),
        "vent_origin_mm_xyz": list(vent_grid.origin_mm_xyz),
        "vent_shape_zyx": list(vent_grid.shape_zyx),
        "psf_fwhm_mm": fwhm,
        "vent_mean_counts": mean_counts,
        "ct_noise_sd_hu": noise_sd,
        **breathing,
        "si_displacement_base_mm": float(np.percentile(caudal[in_lung_model], 99)),
        "si_displacement_apex_mm": float(np.mean(caudal[apex_region])) if apex_region.any() else 0.0,
        "lung_volume_ml_per_phase": mask_volumes,
        "mean_lung_hu_per_phase": mean_lung_hu,
        "target_defect_fraction": planted.target_fraction,
        "defect_fraction": float(defect_mask.sum() / max(average_mask.sum(), 1)),
        "mean_local_ventilation_healthy": float(local_vent[healthy].mean()) if healthy.any() else 0.0,
        "mean_local_ventilation_defect": float(local_vent[defect_mask > 0].mean()) if defect_mask.any() else 0.0,
        "defects": [vars(region) for region in planted.regions],
        "hot_spots": hot_spots,
        "anatomy": {key: value for key, value in vars(anatomy).items() if key != "hilum_zyx"},
    }
    logger.debug("generated %s (%s, %s), defect fraction %.3f", subject_id, modality, size, truth["defect_fraction"])
    return SyntheticSubject(
        subject_id=subject_id,
        modality=modality,
        size=size,
        phases=phases,
        phase_masks=phase_masks,
        average_image=ct_grid.to_image(average_hu),
        average_mask=ct_grid.to_image(average_mask),
        vent_image=vent_grid.to_image(vent.astype(np.float32)),
        vent_mask=vent_grid.to_image(vent_mask),
        defect_mask=ct_grid.to_image(defect_mask),
        local_ventilation=ct_grid.to_image(local_vent.astype(np.float32)),
        defects=planted.regions,
        truth=truth,
    )
