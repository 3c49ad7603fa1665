"""Trainer of ``lstm_regress``: the proposed LSTM trained on the normalised RefVI instead of the binary defect mask.

The study's model outputs a defect probability, which the VAMPIRE challenge's metrics (voxel-wise Spearman r_s against
the RefVI, DSC of the low- and high-function regions) cannot rank against CT-ventilation methods. This variant
keeps the network, inputs, selection, standardiser and early stopping of the sequence family
(``vent.models.sequence``) and changes only the target and the loss:

- target per voxel, per patient (``RegressionParams.target``):
  ``rank``: the voxel's RefVI percentile within the patient's lung, (rank_avg(v_i) - 1) / (n - 1) in [0, 1];
  ``minmax``: the RefVI clipped by the ground truth's iterative outlier band [lo, hi] (``vent.groundtruth``),
  then (v_i - lo) / (hi - lo);
- loss: squared error of sigmoid(logit) against the target (``TrainSettings.loss = "mse"``);
- output: the predicted ventilation in [0, 1] (the ``continuous`` map of the prediction contract), and the binary
  defect call of that map by the ground truth's own definition (``vent.groundtruth.call_low_ventilation``: the same
  clip and lowest fraction), so its Table 2 row is scored like every other; no validation threshold is chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from vent.groundtruth import call_low_ventilation, iterative_outlier_clip
from vent.io import layout
from vent.io.artifacts import open_radiomics_case
from vent.io.predictions import Prediction
from vent.models.jobs import FoldJob, FoldOutcome
from vent.models.sequence import fit_fold, fit_record, fold_inputs, predict_case, save_fold_model

__all__ = ["ventilation_target", "train_regression_fold"]


def ventilation_target(refvi: np.ndarray, kind: str, ground_truth: Any) -> np.ndarray:
    """A patient's normalised RefVI in [0, 1] (module docstring): ``rank`` or ``minmax`` after the outlier clip."""
    values = np.asarray(refvi, dtype=np.float64)
    if len(values) < 2 or np.ptp(values) == 0:
        return np.full(len(values), 0.5, dtype=np.float32)
    if kind == "rank":
        return ((stats.rankdata(values, method="average") - 1) / (len(values) - 1)).astype(np.float32)
    clip = iterative_outlier_clip(values, n_sd=ground_truth.outlier_sd, tolerance=ground_truth.tolerance,
                                  max_iterations=ground_truth.max_iterations)
    clipped = np.clip(values, clip.lower, clip.upper)
    return ((clipped - clip.lower) / max(clip.upper - clip.lower, 1e-12)).astype(np.float32)


def _call(ventilation: np.ndarray, ground_truth: Any) -> tuple[np.ndarray, float]:
    return call_low_ventilation(
        ventilation, fraction=ground_truth.fraction, method=ground_truth.method, n_sd=ground_truth.outlier_sd,
        tolerance=ground_truth.tolerance, max_iterations=ground_truth.max_iterations,
    )


def train_regression_fold(job: FoldJob, progress: Any) -> FoldOutcome:
    """Train on the training patients' normalised RefVI, stop early on the validation patients', predict the test
    patients' ventilation and call its lowest fraction the defect."""
    params = job.train.model_params(job.model)
    files: dict[str, Path] = {c: layout.case_file(job.run_dir, "radiomics", c) for c in job.fold.all_cases()}
    inputs = fold_inputs(job, files)
    targets = {
        case: ventilation_target(open_radiomics_case(files[case]).refvi(), params.target, job.ground_truth)
        for case in [*job.fold.train, *job.fold.val]
    }
    model, result = fit_fold(job, files, inputs, progress, targets=targets, loss="mse")
    save_fold_model(model, job, inputs)
    predictions = []
    for case in job.fold.test:
        source = open_radiomics_case(files[case])
        ventilation = predict_case(model, files[case], inputs, job)
        score, threshold = _call(ventilation, job.ground_truth)
        predictions.append(Prediction(case, job.row, job.fold.index, score, threshold, source.coords(), source.grid,
                                      continuous=ventilation, continuous_name="ventilation"))
    warnings = []
    if job.train.pos_weight is not None:
        warnings.append(f"train.pos_weight ({job.train.pos_weight}) ignored: the target is continuous")
    return FoldOutcome(
        predictions=predictions,
        record={**fit_record(result, inputs, job), "target": params.target, "loss": "mse",
                "history": result.history, "warnings": warnings},
        summary=f"{result.epochs_run} epochs (best {result.best_epoch}) on {result.device}, "
        f"val MSE {result.best_val_loss:.4f}; defects = lowest {job.ground_truth.fraction:.0%} "
        f"({job.ground_truth.method}) of the predicted ventilation",
    )
