"""Reference ventilation image (RefVI) formation for the synthetic cohort: a nuclear-medicine-like scan.

Model (Galligas PET / DTPA SPECT): the tracer deposits in proportion to the local ventilation, so the activity is

    activity(x) = max(J_in(X(x)) - 1, 0) * lung(x) * gain(x)

on the CT grid at the mid-ventilation (time-averaged) position, with J_in the Jacobian at maximum inhalation and gain
a smooth per-subject factor (+/-10%: deposition and attenuation-correction inhomogeneity). The scanner blurs it with
a Gaussian PSF (FWHM ~8 mm PET, 12-15 mm SPECT), it is sampled on the RefVI's own coarser grid, counted with Poisson
noise (mean counts per lung voxel set per modality) and a few hot spots (central-airway aerosol deposition, far
above mean + 4 SD) are added. Values outside the RefVI lung mask are 0.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from vent.synth.grids import Grid

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def blur_with_psf(activity_zyx: np.ndarray, spacing_mm_zyx, fwhm_mm: float) -> np.ndarray:
    """Gaussian point-spread function, sigma = FWHM / (2 sqrt(2 ln 2)) = FWHM / 2.3548, in mm per axis."""
    sigma_vox = [fwhm_mm * FWHM_TO_SIGMA / s for s in spacing_mm_zyx]
    return ndimage.gaussian_filter(activity_zyx.astype(np.float32), sigma_vox, mode="constant")


def resample_onto(values_zyx: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """Linear resampling in physical space (SimpleITK), 0 outside the source."""
    resampled = sitk.Resample(
        source.to_image(values_zyx.astype(np.float32)), target.reference_image(), sitk.Transform(),
        sitk.sitkLinear, 0.0, sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(resampled)


def make_reference_ventilation(
    rng: np.random.Generator,
    activity_zyx: np.ndarray,
    lung_occupancy_zyx: np.ndarray,
    ct_grid: Grid,
    vent_grid: Grid,
    fwhm_mm: float,
    mean_counts: float,
    hilum_mm_zyx: list[tuple[float, float, float]],
    n_hot_spots: int,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Form the RefVI and its lung mask on ``vent_grid`` (see module docstring).

    Args:
        rng: Random generator (consumed).
        activity_zyx: Noise-free tracer activity on the CT grid (ventilation x lung x gain), arbitrary units.
        lung_occupancy_zyx: Lung occupancy in [0, 1] on the CT grid at the same (time-averaged) position.
        ct_grid: Grid of the two arrays above.
        vent_grid: The RefVI grid.
        fwhm_mm: Scanner PSF full width at half maximum in mm.
        mean_counts: Mean counts per lung voxel of the RefVI (sets the Poisson noise level).
        hilum_mm_zyx: Physical positions of the hila (hot spots are placed near them).
        n_hot_spots: Number of hot-spot outliers to add.

    Returns:
        (vent_zyx float32, vent_mask_zyx uint8, hot_spots) where hot_spots lists the outlier voxels added.
    """
    blurred = blur_with_psf(activity_zyx, ct_grid.spacing_mm_zyx, fwhm_mm)
    activity = np.clip(resample_onto(blurred, ct_grid, vent_grid), 0.0, None)
    mask = resample_onto(lung_occupancy_zyx, ct_grid, vent_grid) >= 0.5
    level = float(activity[mask].mean()) if mask.any() else 1.0
    counts = rng.poisson(activity / max(level, 1e-12) * mean_counts).astype(np.float32)
    counts[~mask] = 0.0
    hot_spots: list[dict] = []
    if mask.any() and n_hot_spots > 0:
        inside = np.argwhere(mask)
        z, y, x = vent_grid.axes_mm_zyx()
        points = np.stack([z[inside[:, 0]], y[inside[:, 1]], x[inside[:, 2]]], axis=1)
        distance = np.min([np.linalg.norm(points - np.asarray(h), axis=1) for h in hilum_mm_zyx], axis=0)
        candidates = inside[np.argsort(distance)[: max(n_hot_spots, len(inside) // 10)]]
        chosen = candidates[rng.choice(len(candidates), size=min(n_hot_spots, len(candidates)), replace=False)]
        mean, sd = float(counts[mask].mean()), float(counts[mask].std())
        for voxel in chosen:
            factor = float(rng.uniform(6.0, 12.0))
            counts[tuple(voxel)] = mean + factor * sd
            hot_spots.append({"index_zyx": [int(v) for v in voxel], "sd_above_mean": factor})
    return counts, mask.astype(np.uint8), hot_spots
