"""No-learning reference rules: what any model must beat to have learned something from the 4DCT.

``densest_inhale``: the defect map is the fraction f of analysed lung voxels with the highest CT number (densest
tissue) at maximum inhalation, where a poorly ventilated region has filled with the least air. The score for the AUC
is the rank of the voxel's HU at the inhale phase, scaled to [0, 1]:

    score_i = rank(HU_i at inhale) / (n - 1),   defect_i = score_i >= 1 - f  (ties share the higher rank).

The inhale phase comes from lung volume (no labels) and f is the ground truth's configured fraction (the same for
every patient), so nothing of the test patient's ground truth is used.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["BASELINE_LABELS", "densest_at_inhale"]

BASELINE_LABELS = {"densest_inhale": "No learning: densest voxels at max inhale"}


def densest_at_inhale(intensity_nt: np.ndarray, inhale_phase: int, fraction: float) -> tuple[np.ndarray, float]:
    """(score in [0, 1] per voxel, threshold) of the densest-at-inhale rule (module docstring).

    Args:
        intensity_nt: (n, T) HU of each analysed voxel per phase (analysis order).
        inhale_phase: Index of maximum inhalation in that order.
        fraction: Share of voxels called defect (the ground truth's fraction).
    """
    hu = np.asarray(intensity_nt, dtype=np.float64)[:, int(inhale_phase)]
    if len(hu) < 2:
        return np.ones(len(hu)), 0.0
    score = (stats.rankdata(hu, method="max") - 1) / (len(hu) - 1)
    return score, float(np.quantile(score, 1.0 - fraction, method="higher"))
