"""No-learning reference rules: what any model must beat to have learned something from the 4DCT.

``densest_inhale``: the defect map is the fraction f of analysed lung voxels with the highest CT number (densest
tissue) at maximum inhalation, where a poorly ventilated region has filled with the least air. The score for the AUC
is the rank of the voxel's HU at the inhale phase, scaled to [0, 1]:

    score_i = rank(HU_i at inhale) / (n - 1),   defect_i = score_i >= 1 - f  (ties share the higher rank).

The inhale phase comes from lung volume (no labels) and f is the ground truth's configured fraction (the same for
every patient), so nothing of the test patient's ground truth is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

__all__ = ["densest_at_inhale", "densest_inhale_fold"]


def densest_at_inhale(intensity_nt: np.ndarray, inhale_phase: int, fraction: float) -> tuple[np.ndarray, float]:
    """(score in [0, 1] per voxel, threshold) of the densest-at-inhale rule (module docstring).

    Args:
        intensity_nt: (n, T) HU of each analysed voxel per phase (analysis order).
        inhale_phase: Index of maximum inhalation in that order.
        fraction: Share of voxels called defect (the ground truth's fraction).
    """
    hu = np.asarray(intensity_nt, dtype=np.float64)[:, int(inhale_phase)]
    if len(hu) < 2:
        return np.ones(len(hu), dtype=np.float32), 0.0
    # the score is stored as float32 (the prediction contract), so the threshold is taken on the stored values:
    # score >= threshold then calls the same voxels from the file as in memory
    score = ((stats.rankdata(hu, method="max") - 1) / (len(hu) - 1)).astype(np.float32)
    return score, float(np.quantile(score, 1.0 - fraction, method="higher"))


def densest_inhale_fold(job: Any, progress: Any) -> Any:
    """The rule on a fold's test patients (a ``vent.models.jobs.FoldJob``): reads only ``preprocess/<case>.h5``.

    Scores every analysed voxel (the preprocessed lung mask), inhale phase from the case's lung volumes.
    """
    from vent.io import layout
    from vent.io.artifacts import read_preprocessed_case
    from vent.io.predictions import Prediction
    from vent.models.jobs import FoldOutcome

    del progress
    predictions = []
    for case in job.fold.test:
        pre = read_preprocessed_case(layout.case_file(job.run_dir, "preprocess", case))
        coords = np.argwhere(pre.lung_mask_zyx > 0).astype(np.int32)
        z, y, x = coords.T
        score, threshold = densest_at_inhale(pre.ct_tzyx[:, z, y, x].T, int(pre.attrs["inhale_phase"]),
                                             job.ground_truth.fraction)
        predictions.append(Prediction(case, job.row, job.fold.index, score, threshold, coords, pre.grid))
    return FoldOutcome(predictions=predictions, summary=f"rule on {len(predictions)} test patient(s)")
