"""Tests of the breathing model: Jacobian against SimpleITK, inverse map, strain integration, phase schedule."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from vent.synth.breathing import (
    displacement_from_strain,
    inverse_displacement,
    jacobian_determinant,
    phase_amplitudes,
)
from vent.synth.grids import Grid


def _smooth_field(shape, amplitude_mm, seed=0):
    rng = np.random.default_rng(seed)
    field = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 3.0, mode="wrap") for _ in range(3)])
    return (field / np.abs(field).max() * amplitude_mm).astype(np.float32)


def test_jacobian_matches_simpleitk_displacement_field_jacobian():
    """det(I + a grad u) equals SimpleITK's DisplacementFieldJacobianDeterminant (with spacing) inside the grid."""
    spacing_zyx = (2.5, 1.2, 0.9)
    displacement = _smooth_field((24, 26, 28), 3.0)
    amplitude = 0.8
    vector = np.moveaxis(displacement[::-1] * amplitude, 0, -1).astype(np.float64)  # (z, y, x, [ux, uy, uz])
    image = sitk.GetImageFromArray(vector, isVector=True)
    image.SetSpacing(spacing_zyx[::-1])
    reference = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(image))
    ours = jacobian_determinant(displacement, spacing_zyx, amplitude)
    inner = (slice(2, -2),) * 3
    np.testing.assert_allclose(ours[inner], reference[inner], atol=1e-4)


def test_inverse_displacement_round_trip():
    """X = x - w(x) maps back: x = X + a u(X) within 2% of the largest displacement."""
    grid = Grid((30, 30, 30), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    displacement = _smooth_field(grid.shape_zyx, 4.0, seed=3)
    backward = inverse_displacement(displacement, grid, 0.9, iterations=3)
    index = np.indices(grid.shape_zyx, dtype=np.float64)
    reference_index = index - backward / 2.0
    forward_at_reference = np.stack(
        [ndimage.map_coordinates(displacement[i], reference_index, order=1, mode="nearest") for i in range(3)]
    ) * 0.9
    inner = (slice(None),) + (slice(4, -4),) * 3
    error = np.abs(reference_index * 2.0 + forward_at_reference - index * 2.0)[inner]
    assert error.max() < 0.02 * 4.0 * 0.9 + 1e-3


def test_displacement_divergence_equals_strain_inside_lung():
    """div u = s where the lung occupancy is 1 (the model's defining property), checked with numpy gradients."""
    grid = Grid((40, 40, 40), (2.0, 2.0, 2.0), (-40.0, -40.0, -40.0))
    z, y, x = grid.mesh_mm_zyx()
    lung = ((z / 30) ** 2 + (y / 25) ** 2 + ((np.abs(x) - 18) / 14) ** 2 < 1).astype(np.float32)
    strain = (0.15 * (1 + 0.01 * y) * lung).astype(np.float32)
    u = displacement_from_strain(strain, lung, grid, 0.0, (0.5, 0.3, 0.2), smoothing_mm=8.0)
    divergence = sum(np.gradient(u[i], 2.0, axis=i) for i in range(3))
    deep = ndimage.binary_erosion(lung > 0, iterations=3)
    np.testing.assert_allclose(divergence[deep], strain[deep], atol=0.01)
    # Diaphragm-driven: caudal motion at the lung base, ~0 at the apex.
    assert u[0][deep].min() < -3.0


@pytest.mark.parametrize("n_phases", [5, 8, 10])
def test_phase_amplitudes_start_at_exhale_and_peak_once(n_phases):
    amplitudes = phase_amplitudes(n_phases, np.random.default_rng(0))
    assert amplitudes[0] == 0.0
    assert int(np.argmax(amplitudes)) == n_phases // 2
    assert np.sum(amplitudes == amplitudes.max()) == 1
    assert np.all(np.diff(amplitudes[: n_phases // 2 + 1]) > 0)
    assert np.all(np.diff(amplitudes[n_phases // 2:]) < 0)
