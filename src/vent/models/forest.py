"""Trainer of the tabular family: a random forest on each voxel's raw CT values over the phases (``rf``).

The study's comparison (section 4.6): scikit-learn's ``RandomForestClassifier`` with 100 trees, Gini impurity and
bootstrap samples, on the T raw HU values of each analysed lung voxel (``preprocess/<case>.h5``; no radiomics, no
selection). Its hyper-parameters come from a random search (``RandomizedSearchCV``, ``ForestParams.n_iter`` draws
from ``SEARCH_SPACE``) scored by AUC-ROC in a patient-grouped inner cross-validation (``GroupKFold``) over the fold's
*training* patients only; the fold's validation patients then choose the binary threshold (``train.threshold``) and
its test patients are predicted. Neither the validation nor the test patients' voxels reach the search or the fit.

Training voxels: a class-stratified subsample of ``max_voxels_per_case`` per patient (``vent.models.data
.select_case_voxels``, seeded by the fold), so a forest's memory does not grow with the patients' size. With a single
training patient no grouped inner CV exists; then the search is skipped, the defaults below are used and the fact is
recorded as a warning in ``result.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vent.execution.threads import task_threads
from vent.io import layout
from vent.io.artifacts import read_preprocessed_case
from vent.io.atomic import atomic_path
from vent.io.predictions import Prediction
from vent.models.jobs import FoldJob, FoldOutcome

__all__ = ["SEARCH_SPACE", "VoxelTable", "voxel_table", "train_forest_fold", "search_forest"]

log = logging.getLogger(__name__)

SEARCH_SPACE: dict[str, list[Any]] = {
    "max_depth": [8, 12, 16, 24, None],
    "min_samples_leaf": [5, 10, 20, 50, 100],
    "max_features": ["sqrt", 0.5, 1.0],
}
"""The random search's grid; the study fixes 100 trees, Gini and bootstrap, the rest is searched."""
DEFAULTS = {"max_depth": 16, "min_samples_leaf": 20, "max_features": "sqrt"}
"""Used when the search cannot run (one training patient), and recorded as such."""


@dataclass
class VoxelTable:
    """One patient's analysed lung voxels as a table: HU per phase, ground truth and coordinates."""

    case: str
    hu: np.ndarray  # (N, T) float32
    labels: np.ndarray  # (N,) uint8
    coords: np.ndarray  # (N, 3) int32 (z, y, x)
    grid: Any


def voxel_table(run_dir: Path, case: str) -> VoxelTable:
    """The raw 4DCT sequence of every analysed lung voxel of a preprocessed case (analysis phase order)."""
    pre = read_preprocessed_case(layout.case_file(run_dir, "preprocess", case))
    coords = np.argwhere(pre.lung_mask_zyx > 0).astype(np.int32)
    z, y, x = coords.T
    return VoxelTable(case, pre.ct_tzyx[:, z, y, x].T.astype(np.float32), pre.defect_zyx[z, y, x], coords, pre.grid)


def _training_voxels(tables: list[VoxelTable], max_voxels: int, seed: int) -> tuple[np.ndarray, ...]:
    """(X, y, patient group) of the stratified per-patient subsamples."""
    from vent.models.data import select_case_voxels

    xs, ys, groups = [], [], []
    for number, table in enumerate(tables):
        rows = select_case_voxels(table.labels, max_voxels, seed, table.case)
        rows = np.arange(len(table.labels)) if rows is None else rows
        xs.append(table.hu[rows])
        ys.append(table.labels[rows])
        groups.append(np.full(len(rows), number))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)


def search_forest(x: np.ndarray, y: np.ndarray, groups: np.ndarray, params: Any, n_jobs: int | None) -> tuple:
    """Random search with patient-grouped inner CV; returns (fitted forest on all of x, search record).

    Only the rows given are seen: the caller passes the training patients' voxels and nothing else.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GroupKFold, RandomizedSearchCV

    forest = RandomForestClassifier(
        n_estimators=params.n_estimators, criterion="gini", bootstrap=True, n_jobs=n_jobs, random_state=params.seed
    )
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        forest.set_params(**DEFAULTS).fit(x, y)
        warning = f"random search skipped: {n_groups} training patient (patient-grouped inner CV needs 2); defaults"
        log.warning(warning)
        return forest, {"searched": False, "best_params": DEFAULTS, "warning": warning}
    search = RandomizedSearchCV(
        forest,
        SEARCH_SPACE,
        n_iter=params.n_iter,
        scoring="roc_auc",
        cv=GroupKFold(n_splits=min(params.inner_folds, n_groups)),
        random_state=params.seed,
        refit=True,
    )
    search.fit(x, y, groups=groups)
    record = {
        "searched": True,
        "best_params": search.best_params_,
        "best_inner_auc": float(search.best_score_),
        "n_iter": params.n_iter,
        "inner_folds": min(params.inner_folds, n_groups),
        "n_training_voxels": int(len(y)),
    }
    return search.best_estimator_, record


def _probability(forest: Any, table: VoxelTable) -> np.ndarray:
    """Defect probability of every analysed voxel (class 1 of the forest)."""
    return forest.predict_proba(table.hu)[:, list(forest.classes_).index(1)].astype(np.float32)


def train_forest_fold(job: FoldJob, progress: Any) -> FoldOutcome:
    """Search, fit, threshold on the validation patients and predict the test patients of one fold."""
    import joblib

    from vent.models.sequence import choose_fold_threshold, threshold_record

    del progress
    params = job.train.model_params(job.model)
    train_tables = [voxel_table(job.run_dir, case) for case in job.fold.train]
    x, y, groups = _training_voxels(train_tables, params.max_voxels_per_case, job.train.seed + job.fold.index)
    del train_tables
    forest, record = search_forest(x, y, groups, params, task_threads(job.execution) or -1)
    with atomic_path(layout.forest_file(job.run_dir, job.row, job.fold.index)) as tmp:
        joblib.dump(forest, tmp, compress=3)

    def predict(case: str) -> tuple[np.ndarray, np.ndarray]:
        table = voxel_table(job.run_dir, case)
        return table.labels, _probability(forest, table)

    choice = choose_fold_threshold(job.train.threshold, job.fold.val, predict)
    predictions = []
    for case in job.fold.test:
        table = voxel_table(job.run_dir, case)
        predictions.append(Prediction(case, job.row, job.fold.index, _probability(forest, table),
                                      choice.threshold, table.coords, table.grid))
    return FoldOutcome(
        predictions=predictions,
        record={"search": record, "warnings": [record["warning"]] if "warning" in record else []},
        threshold=threshold_record(job.train.threshold, choice, job.fold.val),
        summary=f"forest {record['best_params']} (inner AUC {record.get('best_inner_auc', float('nan')):.3f}), "
        f"threshold {choice.threshold:.3f} ({choice.rule})",
    )
