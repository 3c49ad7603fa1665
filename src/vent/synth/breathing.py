"""Breathing motion of the synthetic subject: a strain-driven displacement field and its Jacobian.

The subject breathes from maximum exhalation (the reference configuration X) to maximum inhalation and back. At
phase p a reference point moves to x = X + a_p u(X), with a_p in [0, 1] the breathing amplitude (0 at max exhale,
1 at max inhale) and u the displacement at max inhale.

u is built from a local volumetric strain field s(X) >= 0 (the planted regional ventilation, J - 1 to first
order): s is split between the three axes with fractions f_z + f_y + f_x = 1 and integrated along each axis,

    u_z(X) = -f_z * integral_{z}^{apex} s dz'   (diaphragm-driven: 0 at the apex, largest at the base, caudal)
    u_y(X) = -f_y * integral_{y}^{posterior} s dy'   (anterior chest-wall motion; the spine stays put)
    u_x(X) = +/- f_x * integral_{midline}^{x} s dx'   (lateral rib motion, outwards on each side)

so that div u = s exactly. Outside the lungs u is replaced by a spatially smoothed copy (the chest wall, mediastinum
and abdomen follow the lungs smoothly), which leaves the lung surface free to slide along the pleura (a sharp shear,
like real pleural sliding). The Jacobian determinant J = det(I + a grad u) gives the local volume change; the density
of parenchyma scales with 1/J (mass conservation).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from vent.synth.grids import Grid


def phase_amplitudes(n_phases: int, rng: np.random.Generator) -> np.ndarray:
    """Breathing amplitude a_p of each phase, starting at maximum exhalation.

    a_p = (1 - cos(pi p / p_in)) / 2 for p <= p_in and (1 - cos(pi (N - p) / (N - p_in))) / 2 after, with
    p_in = N // 2 the inhale phase, then a +/-3% irregularity on the intermediate phases (never above the inhale).

    Args:
        n_phases: Number of phases N (5 for PET-like, 10 for SPECT-like studies).
        rng: Random generator (consumed).

    Returns:
        float64 array of shape (N,), a_0 = 0, max a = 1 at index N // 2.
    """
    inhale = n_phases // 2
    p = np.arange(n_phases, dtype=float)
    rising = (1.0 - np.cos(np.pi * p / inhale)) / 2.0
    falling = (1.0 - np.cos(np.pi * (n_phases - p) / (n_phases - inhale))) / 2.0
    amplitudes = np.where(p <= inhale, rising, falling)
    jitter = 1.0 + rng.uniform(-0.03, 0.03, n_phases)
    amplitudes = np.clip(amplitudes * jitter, 0.0, 0.97)
    amplitudes[0], amplitudes[inhale] = 0.0, 1.0
    return amplitudes


def displacement_from_strain(
    strain_zyx: np.ndarray,
    lung_occupancy_zyx: np.ndarray,
    grid: Grid,
    midline_x_mm: float,
    axis_fractions_zyx: tuple[float, float, float],
    smoothing_mm: float,
) -> np.ndarray:
    """Displacement at maximum inhalation from a volumetric strain field (see module docstring).

    Args:
        strain_zyx: Local volumetric strain s (J - 1 to first order), 0 outside the lungs, shape (nz, ny, nx).
        lung_occupancy_zyx: Lung occupancy in [0, 1] on the same grid.
        grid: The (coarse) model grid the fields live on.
        midline_x_mm: Physical x of the body midline (lateral motion points away from it).
        axis_fractions_zyx: Fractions (f_z, f_y, f_x) of the strain taken up along each axis, summing to 1.
        smoothing_mm: Gaussian sigma (mm) of the smooth copy used outside the lungs.

    Returns:
        float32 array (3, nz, ny, nx): displacement (u_z, u_y, u_x) in mm.
    """
    dz, dy, dx = grid.spacing_mm_zyx
    f_z, f_y, f_x = axis_fractions_zyx
    # Integrals of s from each voxel to the apex (top, high z) and to the posterior edge (high y); the voxel itself
    # counts half (midpoint rule).
    to_apex = np.flip(np.cumsum(np.flip(strain_zyx, 0), 0), 0) - 0.5 * strain_zyx
    to_back = np.flip(np.cumsum(np.flip(strain_zyx, 1), 1), 1) - 0.5 * strain_zyx
    u_z = -f_z * dz * to_apex
    u_y = -f_y * dy * to_back
    x_axis = grid.axes_mm_zyx()[2]
    left = x_axis >= midline_x_mm
    u_x = np.zeros_like(strain_zyx)
    u_x[..., left] = np.cumsum(strain_zyx[..., left], axis=2) - 0.5 * strain_zyx[..., left]
    right = ~left
    u_x[..., right] = -(np.flip(np.cumsum(np.flip(strain_zyx[..., right], 2), 2), 2) - 0.5 * strain_zyx[..., right])
    u_x *= f_x * dx
    displacement = np.stack([u_z, u_y, u_x]).astype(np.float32)
    sigma_vox = [smoothing_mm / s for s in grid.spacing_mm_zyx]
    weight = np.clip(ndimage.gaussian_filter(lung_occupancy_zyx.astype(np.float32), 0.5), 0.0, 1.0)
    for component in range(3):
        smooth = ndimage.gaussian_filter(displacement[component], sigma_vox, mode="nearest")
        displacement[component] = weight * displacement[component] + (1.0 - weight) * smooth
    return displacement


def jacobian_determinant(displacement: np.ndarray, spacing_mm_zyx, amplitude: float) -> np.ndarray:
    """J = det(I + a grad u), the local volume ratio between a phase and the reference (max exhale).

    Args:
        displacement: (3, nz, ny, nx) displacement (u_z, u_y, u_x) in mm at amplitude 1.
        spacing_mm_zyx: Grid spacing in mm (z, y, x).
        amplitude: Breathing amplitude a of the phase.

    Returns:
        float32 array (nz, ny, nx).
    """
    grads = [np.gradient(displacement[i] * amplitude, *spacing_mm_zyx) for i in range(3)]
    m = [[grads[i][j] + (1.0 if i == j else 0.0) for j in range(3)] for i in range(3)]
    det = (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
           - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
           + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))
    return det.astype(np.float32)


def inverse_displacement(displacement: np.ndarray, grid: Grid, amplitude: float, iterations: int = 3) -> np.ndarray:
    """Backward field w with X = x - w(x) for the forward map x = X + a u(X), on the same grid.

    Fixed-point iteration X_{k+1} = x - a u(X_k), which converges because |a grad u| << 1.

    Args:
        displacement: (3, nz, ny, nx) forward displacement u in mm at amplitude 1.
        grid: The grid of ``displacement``.
        amplitude: Breathing amplitude a.
        iterations: Number of fixed-point iterations.

    Returns:
        float32 array (3, nz, ny, nx): w in mm.
    """
    if amplitude == 0.0:
        return np.zeros_like(displacement)
    index = np.indices(grid.shape_zyx, dtype=np.float32)
    spacing = np.asarray(grid.spacing_mm_zyx, dtype=np.float32).reshape(3, 1, 1, 1)
    backward = displacement * amplitude
    for _ in range(iterations):
        sample_at = index - backward / spacing
        backward = np.stack([
            ndimage.map_coordinates(displacement[i], sample_at, order=1, mode="nearest") for i in range(3)
        ]) * amplitude
    return backward.astype(np.float32)
