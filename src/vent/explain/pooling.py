"""Pooling of per-fold saliency maps into one importance per radiomic sequence, comparable across folds.

Each fold k explains its held-out voxels with its own selection S_k of N_k = |S_k| sequences. A voxel's map is
normalised to sum 1 over its T x N_k cells (``normalise_maps``), so with fewer sequences every cell is larger: the
plain average of these maps over folds favours the sequences of folds that selected few. Here each fold's mean map
is rescaled to a share relative to uniform before pooling:

    M_k = (1 / V_k) sum_v M'_v                       mean normalised map of fold k, (T, N_k), sums to 1
    R_k[t, n] = T N_k M_k[t, n]                      1.0 = a uniform share of the fold's T x N_k cells
    I_k[n] = (1 / T) sum_t R_k[t, n] = N_k sum_t M_k[t, n]   1.0 = the sequence carries 1 / N_k of the relevance

and pooled over folds, weighted by the V_k voxels each fold explained, in two ways:

    importance[f]                 = sum_k V_k 1[f in S_k] I_k[f] / sum_k V_k       (every fold; absent = 0)
    importance_where_selected[f]  = sum_k V_k 1[f in S_k] I_k[f] / sum_k V_k 1[f in S_k]

A sequence a fold did not select carries no relevance in that fold's model, hence 0 there. ``importance`` (over all
folds) ranks; ``importance_where_selected`` and ``n_folds`` say how strong and how stable a sequence is where chosen.
The (T, F) pooled maps use the same weights on R_k. The per-class maps (defect, healthy) pool each fold's mean over
its voxels of one class the same way, with V_k the fold's voxels of that class (a fold without any is left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vent.errors import DataError

IMPORTANCE_DEFINITION = (
    "Per fold k with N_k selected sequences and T phases: M_k = mean over its V_k explained voxels of the voxel maps "
    "normalised to sum 1; R_k = T * N_k * M_k (1.0 = a uniform share of the fold's cells); I_k[n] = mean over "
    "phases of R_k[:, n] (1.0 = the sequence carries 1/N_k of the relevance). importance = voxel-weighted mean of "
    "I_k over all folds with 0 where a fold did not select the sequence (this ranks); importance_where_selected = "
    "voxel-weighted mean over the folds that selected it; n_folds = folds that selected it."
)


@dataclass
class FoldMap:
    """One fold's explanation as the pooling needs it.

    Attributes:
        feature_ids: The fold's N_k selected sequence ids, in map column order.
        mean_map: Mean of the sum-normalised per-voxel maps, shape (T, N_k).
        n_voxels: Voxels the fold explained (V_k, its weight).
    """

    feature_ids: Sequence[str]
    mean_map: np.ndarray
    n_voxels: int


@dataclass
class PooledImportance:
    """Importance pooled over folds (see the module docstring for the formulas).

    Attributes:
        feature_ids: All F candidate sequence ids, in column order.
        pooled_map: Voxel-weighted mean of R_k over all folds (absent = 0), shape (T, F); NaN for a sequence no fold
            selected.
        pooled_map_where_selected: The same over the folds that selected each sequence, shape (T, F); NaN if none.
        importance: Mean over phases of ``pooled_map``, shape (F,); the ranking value.
        importance_where_selected: Mean over phases of ``pooled_map_where_selected``, shape (F,).
        n_folds: Folds that selected each sequence, shape (F,).
        n_folds_total: Folds pooled.
        order: Indices of the selected sequences by decreasing ``importance`` (ties: ``importance_where_selected``,
            then id order).
    """

    feature_ids: list[str]
    pooled_map: np.ndarray
    pooled_map_where_selected: np.ndarray
    importance: np.ndarray
    importance_where_selected: np.ndarray
    n_folds: np.ndarray
    n_folds_total: int
    order: list[int]


def relative_map(mean_map: np.ndarray) -> np.ndarray:
    """R = T N M: a mean normalised (T, N) map rescaled so that 1.0 is a uniform share of its T x N cells."""
    mean_map = np.asarray(mean_map, dtype=np.float64)
    if mean_map.ndim != 2:
        raise DataError(f"a mean saliency map must have shape (T, N); got {mean_map.shape}.")
    return mean_map * mean_map.size


def pool_fold_maps(folds: Sequence[FoldMap], feature_ids: Sequence[str]) -> PooledImportance:
    """Pool per-fold mean maps into importance per sequence without the normalisation bias (module docstring).

    Args:
        folds: Each fold's feature ids, mean normalised (T, N_k) map and voxel count; at least one fold.
        feature_ids: All F candidate sequence ids (every fold's ids must be among them).

    Returns:
        The pooled maps, both importances, n_folds and the ranking.
    """
    feature_ids = list(feature_ids)
    if not folds:
        raise DataError("no fold maps to pool.")
    n_phases = np.asarray(folds[0].mean_map).shape[0]
    column = {feature_id: j for j, feature_id in enumerate(feature_ids)}
    weighted = np.zeros((n_phases, len(feature_ids)))
    selected_weight = np.zeros(len(feature_ids))
    n_folds = np.zeros(len(feature_ids), dtype=np.int64)
    total_weight = 0.0
    for fold in folds:
        relative = relative_map(fold.mean_map)
        if relative.shape != (n_phases, len(fold.feature_ids)):
            raise DataError(
                f"fold map of shape {relative.shape} does not match {n_phases} phases x {len(fold.feature_ids)} ids."
            )
        unknown = [f for f in fold.feature_ids if f not in column]
        if unknown:
            raise DataError(f"fold feature ids {unknown} are not among the candidate sequences.")
        columns = [column[f] for f in fold.feature_ids]
        weighted[:, columns] += fold.n_voxels * relative
        selected_weight[columns] += fold.n_voxels
        n_folds[columns] += 1
        total_weight += fold.n_voxels
    present = n_folds > 0
    pooled = np.full_like(weighted, np.nan)
    pooled[:, present] = weighted[:, present] / total_weight
    where_selected = np.full_like(weighted, np.nan)
    where_selected[:, present] = weighted[:, present] / selected_weight[present]
    importance = pooled.mean(axis=0)
    importance_where_selected = where_selected.mean(axis=0)
    order = sorted(np.flatnonzero(present), key=lambda j: (-importance[j], -importance_where_selected[j], j))
    return PooledImportance(
        feature_ids=feature_ids,
        pooled_map=pooled,
        pooled_map_where_selected=where_selected,
        importance=importance,
        importance_where_selected=importance_where_selected,
        n_folds=n_folds,
        n_folds_total=len(folds),
        order=[int(j) for j in order],
    )
