"""Lung-edge helpers: nearest-phase carry, kernel lung fraction, signed distance, edge sequences."""

import numpy as np
import pytest
from scipy import ndimage

from vent.radiomics.lung_edge import (
    EDGE_CHANNELS,
    carry_nearest_phase,
    edge_sequences,
    kernel_lung_fraction,
    signed_distance_mm,
)


def test_carry_nearest_phase_is_cyclic_and_prefers_the_earlier_phase():
    values = np.arange(1, 6, dtype=float)[None, :, None] * np.ones((3, 5, 2))  # phase t holds t + 1
    invalid = np.zeros((3, 5), dtype=bool)
    invalid[0, 0] = True  # neighbours 1 and 4 (cyclic) at distance 1 -> phase 1 (earlier)
    invalid[1, [0, 1]] = True  # phase 0: nearest valid is 4 (cyclic distance 1); phase 1: phase 2
    invalid[2] = True  # nothing valid
    filled, unfilled = carry_nearest_phase(values, invalid)
    assert filled[0, 0, 0] == 2.0
    assert filled[1, 0, 0] == 5.0 and filled[1, 1, 0] == 3.0
    assert unfilled.tolist() == [False, False, True]
    assert (filled[2] == values[2]).all()
    assert (filled[~invalid] == values[~invalid]).all()


def test_kernel_lung_fraction_matches_a_direct_count():
    rng = np.random.default_rng(0)
    mask = rng.random((12, 13, 14)) < 0.3
    fraction = kernel_lung_fraction(mask, 5)
    padded = np.pad(mask, 2)
    for z, y, x in [(0, 0, 0), (5, 6, 7), (11, 12, 13)]:
        direct = padded[z : z + 5, y : y + 5, x : x + 5].sum() / 125
        assert fraction[z, y, x] == pytest.approx(direct, abs=1e-6)


def test_signed_distance_sign_and_scale():
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[5:15, 5:15, 5:15] = True
    distance = signed_distance_mm(mask, (2.0, 2.0, 2.0))
    assert distance[10, 10, 10] > 0 and distance[0, 10, 10] < 0
    assert distance[5, 10, 10] == pytest.approx(2.0)  # first inside voxel: one voxel (2 mm) from outside
    assert distance[3, 10, 10] == pytest.approx(-4.0)  # two voxels below the first inside voxel
    expected = ndimage.distance_transform_edt(mask, sampling=2.0)
    np.testing.assert_allclose(distance[mask], expected[mask])


def test_edge_sequences_channels():
    masks = np.zeros((2, 20, 20, 20), dtype=np.uint8)
    masks[0, 5:15, 5:15, 5:15] = 1
    masks[1, 8:15, 5:15, 5:15] = 1
    coords = np.array([[6, 10, 10], [12, 10, 10]])
    edge = edge_sequences(masks, coords, (2.0, 2.0, 2.0), 3)
    assert edge.shape == (2, 2, len(EDGE_CHANNELS))
    assert edge[0, :, 0].tolist() == [1.0, 0.0]  # voxel 0 leaves the lung at phase 1
    assert edge[0, 1, 1] == pytest.approx(-4.0)
    assert edge[1, :, 0].tolist() == [1.0, 1.0]
    assert edge[1, 0, 2] == pytest.approx(1.0)
