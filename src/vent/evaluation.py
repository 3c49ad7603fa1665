"""Scoring every method the same way: per-patient metrics from the prediction contract, Table 2 and its tests.

Pure functions on arrays and rows (no file I/O); the evaluate stage (``vent.stages.evaluate``) feeds them.

- Per patient (study section 4.7): Dice, AUC-ROC, sensitivity and accuracy of the held-out voxels
  (``vent.metrics.patient_metrics``), the binary call being probability >= the fold's threshold.
- Table 2: per method the mean (min-max) over patients, and the two-sided Wilcoxon signed-rank p-value over
  patients against the reference method, pairing each patient's values (the same folds for every method).
- Fig. 10: the ROC of all held-out voxels pooled over patients (``vent.metrics.pooled_roc``).
- VAMPIRE metrics (the challenge's, Kipritidis et al. 2019): per patient the Spearman r_s of a continuous
  ventilation estimate against the RefVI at the held-out voxels and the Dice of the low- and high-function regions
  (``vent.metrics.vampire_metrics``); then mean (min-max) and the Wilcoxon test like Table 2. The estimate is the
  method's own ventilation map where it has one (CT ventilation, ``lstm_regress``), else 1 - its defect
  probability (named in the ``estimate`` column), so every row is ranked on the challenge's terms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from vent.errors import ArtifactError
from vent.metrics import (
    METRIC_NAMES,
    VAMPIRE_METRIC_NAMES,
    patient_metrics,
    summarise,
    vampire_metrics,
    wilcoxon_vs_reference,
)

__all__ = [
    "METRICS",
    "VAMPIRE_METRICS",
    "score_patient",
    "ground_truth_at",
    "table2_rows",
    "ventilation_estimate",
    "vampire_metrics",
    "row_label",
    "thin_curve",
    "MAX_ROC_POINTS",
]

METRICS = METRIC_NAMES
VAMPIRE_METRICS = VAMPIRE_METRIC_NAMES
INVERTED_PROBABILITY = "1 - p(defect)"
MAX_ROC_POINTS = 250_000
"""A pooled ROC with more points than this is thinned for storage and plotting (its AUC is computed first)."""


def score_patient(labels: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, float]:
    """The study's four metrics of one patient's held-out voxels (``vent.metrics.patient_metrics``)."""
    metrics = patient_metrics(labels, probability, threshold=threshold)
    return {k: float(metrics[k]) for k in METRICS}


def ventilation_estimate(
    probability: np.ndarray, continuous: np.ndarray | None, continuous_name: str | None
) -> tuple[np.ndarray, str]:
    """A row's continuous ventilation estimate (high = ventilated) and its name: the method's own map, or
    1 - its defect probability when it has none."""
    if continuous is not None:
        return np.asarray(continuous, dtype=np.float64), continuous_name or "continuous"
    return 1.0 - np.asarray(probability, dtype=np.float64), INVERTED_PROBABILITY


def ground_truth_at(defect_zyx: np.ndarray, lung_zyx: np.ndarray, coords_zyx: np.ndarray, where: str) -> np.ndarray:
    """The ground-truth labels at a prediction's voxels; every voxel must be an analysed lung voxel.

    Raises:
        ArtifactError: Naming ``where`` (the prediction) and how many voxels fall outside the analysed lung.
    """
    index = tuple(np.asarray(coords_zyx).T)
    outside = int(np.count_nonzero(lung_zyx[index] == 0))
    if outside:
        raise ArtifactError(
            f"{where}: {outside} predicted voxel(s) lie outside the analysed lung mask; the prediction does not "
            "belong to this preprocessing: re-run the train stage (vent run CONFIG --from train --force)"
        )
    return defect_zyx[index]


def table2_rows(
    per_patient: Sequence[dict[str, Any]], reference: str, rows: Sequence[str], metrics: Sequence[str] = METRICS
) -> list[dict[str, Any]]:
    """One row per method: ``model, n_patients`` and for each of ``metrics`` ``_mean, _min, _max, _p``.

    ``_p`` is the two-sided Wilcoxon signed-rank p-value over patients against ``reference`` (NaN for the reference
    itself), pairing each patient's held-out value of the two methods.
    """
    by_row: dict[str, dict[str, dict[str, float]]] = {}
    for entry in per_patient:
        by_row.setdefault(entry["model"], {}).setdefault(entry["case"], {}).update(
            {m: float(entry[m]) for m in metrics}
        )
    out = []
    for row in rows:
        cases = by_row.get(row, {})
        summary_row: dict[str, Any] = {"model": row, "n_patients": len(cases)}
        for metric in metrics:
            values = {case: v[metric] for case, v in cases.items()}
            summary = summarise(values)
            summary_row[f"{metric}_mean"], summary_row[f"{metric}_min"], summary_row[f"{metric}_max"] = (
                summary.mean,
                summary.lo,
                summary.hi,
            )
            if row == reference or reference not in by_row:
                summary_row[f"{metric}_p"] = math.nan
            else:
                ref_values = {case: v[metric] for case, v in by_row[reference].items()}
                summary_row[f"{metric}_p"] = wilcoxon_vs_reference(ref_values, values)
        out.append(summary_row)
    return out


def row_label(label: str, selection: str, mode: str) -> str:
    """A Table 2 row name: the method's label, and the selection mode when it is not the run's main one."""
    if selection in ("none", mode):
        return label
    return label + f" [{selection}-mode selection" + (", leaks test labels]" if selection == "paper" else "]")


def thin_curve(fpr: np.ndarray, tpr: np.ndarray, max_points: int = MAX_ROC_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Every k-th point of a long ROC curve (first and last kept), at most about ``max_points``; short ones as is."""
    if len(fpr) <= max_points:
        return fpr, tpr
    keep = np.unique(np.r_[np.arange(0, len(fpr), int(np.ceil(len(fpr) / max_points))), len(fpr) - 1])
    return fpr[keep], tpr[keep]
