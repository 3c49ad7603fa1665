"""Hierarchical clustering of features from their correlation matrix (study section 4.5).

distance d_ij = 1 - |r_ij|; agglomerative clustering (average linkage by default); the dendrogram is cut at the
distance that gives the best silhouette coefficient over a sweep of cut-offs. The cophenetic correlation coefficient
says how faithfully the dendrogram keeps the distances (the study: 0.80; above 0.75 is wanted). Study result:
cut-off 0.02, silhouette 0.79, 38 clusters out of 56 features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform
from sklearn.metrics import silhouette_score

from vent.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

# Linkages that are valid on an arbitrary (non-Euclidean) distance matrix; ward, centroid and median are not.
SUPPORTED_LINKAGES = ("average", "complete", "single", "weighted")

DEFAULT_CUTOFFS: tuple[float, ...] = tuple(round(0.01 * k, 2) for k in range(1, 100))


@dataclass
class ClusterResult:
    """Outcome of ``cluster_features``.

    Attributes:
        labels: Cluster of each feature, 1-based, shape (F,).
        cophenetic_cc: Cophenetic correlation coefficient of the dendrogram.
        cutoff: Chosen cut-off distance (1 - |r|).
        silhouette: Silhouette coefficient at the chosen cut-off.
        n_clusters: Number of clusters at the chosen cut-off.
        sweep: (cutoff, n_clusters, silhouette) for every cut-off tried; silhouette is None where undefined
            (1 or F clusters).
        linkage: Linkage method used.
        linkage_matrix: scipy linkage matrix, shape (F - 1, 4).
    """

    labels: np.ndarray
    cophenetic_cc: float
    cutoff: float
    silhouette: float
    n_clusters: int
    sweep: list[tuple[float, int, float | None]]
    linkage: str
    linkage_matrix: np.ndarray = field(repr=False)


def correlation_distance(corr_ff: np.ndarray) -> np.ndarray:
    """Distance between features from their correlation: d_ij = 1 - |r_ij|, with d_ii = 0.

    Args:
        corr_ff: Symmetric correlation matrix, shape (F, F), values in [-1, 1].

    Returns:
        Symmetric distance matrix, shape (F, F), values in [0, 1].
    """
    distance = 1.0 - np.abs(np.asarray(corr_ff, dtype=np.float64))
    distance = 0.5 * (distance + distance.T)
    np.fill_diagonal(distance, 0.0)
    return np.clip(distance, 0.0, 1.0)


def cluster_features(
    corr_ff: np.ndarray, linkage: str = "average", cutoffs: Sequence[float] | None = None
) -> ClusterResult:
    """Cluster features hierarchically and cut the dendrogram at the best-silhouette distance.

    Steps: d = 1 - |r|; Z = scipy linkage on the condensed d; cophenetic CC = Pearson r between d and the cophenetic
    distances of Z (Sokal & Rohlf 1962); for each cut-off c, labels = fcluster(Z, c, "distance") and
    s(c) = mean silhouette (Rousseeuw 1987) on the precomputed d; cut-offs giving 1 or F clusters are skipped; the
    chosen c maximises s (ties: the smallest c).

    Args:
        corr_ff: Feature correlation matrix, shape (F, F), F >= 3, finite.
        linkage: One of "average" (default, UPGMA), "complete", "single", "weighted".
        cutoffs: Distances at which to cut; default 0.01, 0.02, ..., 0.99.

    Returns:
        The clustering at the chosen cut-off, with the full sweep.

    Raises:
        ConfigError: Unknown linkage, or no cut-off gives between 2 and F - 1 clusters.
        DataError: The matrix is not square, too small, or not finite.
    """
    if linkage not in SUPPORTED_LINKAGES:
        raise ConfigError(
            f"selection.linkage = {linkage!r} is not supported; use one of {', '.join(SUPPORTED_LINKAGES)} "
            "(ward/centroid/median need Euclidean distances, and 1 - |r| is not one)."
        )
    corr_ff = np.asarray(corr_ff, dtype=np.float64)
    if corr_ff.ndim != 2 or corr_ff.shape[0] != corr_ff.shape[1]:
        raise DataError(f"the correlation matrix must be square (F, F); got shape {corr_ff.shape}.")
    n_features = corr_ff.shape[0]
    if n_features < 3:
        raise DataError(f"clustering needs at least 3 features; got {n_features}.")
    if not np.isfinite(corr_ff).all():
        raise DataError("the correlation matrix contains NaN or infinite values.")
    cutoffs = sorted(float(c) for c in (DEFAULT_CUTOFFS if cutoffs is None else cutoffs))
    if not cutoffs:
        raise ConfigError("selection.cutoffs is empty; give at least one cut-off distance in (0, 1).")

    distance_ff = correlation_distance(corr_ff)
    condensed = squareform(distance_ff, checks=False)
    linkage_matrix = hierarchy.linkage(condensed, method=linkage)
    cophenetic_cc = float(hierarchy.cophenet(linkage_matrix, condensed)[0])

    sweep: list[tuple[float, int, float | None]] = []
    best: tuple[float, float, np.ndarray] | None = None
    for cutoff in cutoffs:
        labels = hierarchy.fcluster(linkage_matrix, t=cutoff, criterion="distance")
        n_clusters = int(labels.max())
        if n_clusters in (1, n_features):
            sweep.append((cutoff, n_clusters, None))
            continue
        score = float(silhouette_score(distance_ff, labels, metric="precomputed"))
        sweep.append((cutoff, n_clusters, score))
        if best is None or score > best[1]:
            best = (cutoff, score, labels)
    if best is None:
        raise ConfigError(
            f"no cut-off in selection.cutoffs ({cutoffs[0]:g} .. {cutoffs[-1]:g}) gives between 2 and {n_features - 1}"
            " clusters, so no silhouette can be computed; widen the cut-off range."
        )
    cutoff, score, labels = best
    logger.info(
        "feature clustering (%s): cophenetic CC %.3f, cut-off %.3g, silhouette %.3f, %d clusters of %d features",
        linkage,
        cophenetic_cc,
        cutoff,
        score,
        int(labels.max()),
        n_features,
    )
    if cophenetic_cc < 0.75:
        logger.warning("cophenetic CC %.3f is below 0.75: the dendrogram distorts the distances", cophenetic_cc)
    return ClusterResult(
        labels=labels,
        cophenetic_cc=cophenetic_cc,
        cutoff=cutoff,
        silhouette=score,
        n_clusters=int(labels.max()),
        sweep=sweep,
        linkage=linkage,
        linkage_matrix=linkage_matrix,
    )
