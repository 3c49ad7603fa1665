"""Lung voxels at the edge of a breathing lung: empty kernels and the lung-edge positional sequences.

With a per-phase kernel mask (``radiomics.kernel_mask: phase``) a voxel of the analysis mask (the time-averaged lung)
can lie outside the lung at some phase: near the diaphragm it sits in the liver at exhalation. Within a kernel radius
of the lung its kernel still holds lung voxels; further away the kernel is empty and every feature is undefined
(NaN). Where a kernel holds lung voxels but no neighbouring pair, the GLCM features are undefined too.

Policies for such a voxel-phase (``radiomics.empty_kernel``), each applied and counted by the radiomics stage:

- ``analysis_mask`` (default): recompute that voxel-phase with the kernel bounded by the union of the phase's lung
  mask and the analysis mask, on the phase's own grey-level scale (values outside the phase's lung range clip to the
  first or last bin). The kernel then holds the tissue that is at that position at that phase, so the sequence shows
  the abrupt change the study describes at the lung edge instead of a hole; what is left undefined is carried from
  the nearest phase, as below.
- ``nearest_phase``: carry the values of the nearest phase whose kernel is defined (cyclic distance in the breathing
  cycle, ties to the earlier phase); the sequence stays flat across the gap.
- ``drop``: leave the voxel out of the analysis (its ground truth too), counted in the report.

A voxel with no defined phase at all is dropped under every policy. The study's proposed fix for edge effects, a
positional input, is :func:`edge_sequences`: per voxel and phase, whether it is inside that phase's lung, its signed
distance to that phase's lung surface and the lung fraction of its kernel, which the models take as extra inputs
(``train.edge_inputs``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from vent.io.artifacts import EDGE_CHANNELS

__all__ = [
    "EMPTY_KERNEL_POLICIES",
    "EDGE_CHANNELS",
    "kernel_lung_fraction",
    "edge_sequences",
    "phase_edge_channels",
    "carry_nearest_phase",
]

EMPTY_KERNEL_POLICIES = ("analysis_mask", "nearest_phase", "drop")


def kernel_lung_fraction(mask_zyx: np.ndarray, kernel_voxels: int) -> np.ndarray:
    """Share of each voxel's kernel box (edge ``kernel_voxels``, zero outside the image) that lies in ``mask_zyx``.

    f(v) = (1 / k^3) sum_{u in box(v)} mask(u), by a separable box filter; 0 means an empty kernel.
    """
    fraction = ndimage.uniform_filter(mask_zyx.astype(np.float32), size=kernel_voxels, mode="constant", cval=0.0)
    return np.clip(fraction, 0.0, 1.0)


def signed_distance_mm(mask_zyx: np.ndarray, spacing_mm_zyx: tuple[float, float, float]) -> np.ndarray:
    """Signed Euclidean distance (mm) to the mask surface: > 0 inside (distance to the nearest outside voxel),
    < 0 outside (minus the distance to the nearest inside voxel). Voxel-centre distances (scipy EDT)."""
    mask = np.asarray(mask_zyx) > 0
    if not mask.any():
        return np.full(mask.shape, -np.inf, dtype=np.float32)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing_mm_zyx)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_mm_zyx)
    return np.where(mask, inside, -outside).astype(np.float32)


def phase_edge_channels(
    phase_mask_zyx: np.ndarray, coords_zyx: np.ndarray, spacing_mm_zyx: tuple[float, float, float], kernel_voxels: int
) -> np.ndarray:
    """The lung-edge channels of each voxel at one phase, (N, 3) float32, channels :data:`EDGE_CHANNELS`.

    inside = 1 if the voxel is in the phase's lung mask; distance_mm = :func:`signed_distance_mm` at the voxel;
    kernel_lung_fraction = :func:`kernel_lung_fraction` at the voxel.
    """
    z, y, x = np.asarray(coords_zyx).T
    mask = phase_mask_zyx > 0
    out = np.empty((len(z), len(EDGE_CHANNELS)), dtype=np.float32)
    out[:, 0] = mask[z, y, x]
    out[:, 1] = signed_distance_mm(mask, spacing_mm_zyx)[z, y, x]
    out[:, 2] = kernel_lung_fraction(mask, kernel_voxels)[z, y, x]
    return out


def edge_sequences(
    phase_masks_tzyx: np.ndarray, coords_zyx: np.ndarray, spacing_mm_zyx: tuple[float, float, float], kernel_voxels: int
) -> np.ndarray:
    """The lung-edge positional sequences of each voxel, (N, T, 3) float32: :func:`phase_edge_channels` of every
    phase."""
    return np.stack([phase_edge_channels(mask, coords_zyx, spacing_mm_zyx, kernel_voxels)
                     for mask in phase_masks_tzyx], axis=1)


def carry_nearest_phase(values_ntf: np.ndarray, invalid_nt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill invalid voxel-phases with the voxel's values at the nearest valid phase.

    Nearest in the breathing cycle: d(t, s) = min(|t - s|, T - |t - s|); ties go to the earlier phase.

    Args:
        values_ntf: (N, T, F) values; rows of ``invalid_nt`` are overwritten in place of a copy.
        invalid_nt: (N, T) bool, True where the phase's values are undefined.

    Returns:
        (filled copy, unfilled (N,) bool: voxels with no valid phase, left unchanged).
    """
    values = np.array(values_ntf, copy=True)
    invalid = np.asarray(invalid_nt, dtype=bool)
    n_phases = invalid.shape[1]
    phases = np.arange(n_phases)
    unfilled = invalid.all(axis=1)
    rows = np.flatnonzero(invalid.any(axis=1) & ~unfilled)
    for t in range(n_phases):
        need = rows[invalid[rows, t]]
        if len(need) == 0:
            continue
        gap = np.abs(phases - t)
        distance = np.minimum(gap, n_phases - gap).astype(float) + phases * 1e-6  # ties -> earlier phase
        distance = np.where(invalid[need], np.inf, distance[None, :])
        source = np.argmin(distance, axis=1)
        values[need, t] = values_ntf[need, source]
    return values, unfilled
