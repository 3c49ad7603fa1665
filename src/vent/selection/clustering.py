"""Hierarchical clustering of features from their correlation matrix (study section 4.5).

distance d_ij = 1 - |r_ij|; agglomerative clustering (average linkage by default); the dendrogram is cut at the
distance that gives the best mean silhouette over a sweep of cut-offs, among the cut-offs the selection guard
allows. The cophenetic correlation coefficient says how faithfully the dendrogram keeps the distances (the study:
0.80; above 0.75 is wanted). Study result: cut-off 0.02, silhouette 0.79, 38 clusters out of 56 features.

Singletons. A feature alone in its cluster has no within-cluster distance a(i), and the silhouette of Rousseeuw
(1987) leaves it undefined; implementations differ:

- ``"zero"``: s(i) = 0 (Rousseeuw 1987, who sets s(i) = 0 for a one-object cluster; scikit-learn
  ``silhouette_samples``; R ``cluster::silhouette``);
- ``"one"``: s(i) = 1, as MATLAB's ``silhouette`` does (it takes a(i) = 0, so s(i) = b(i) / b(i) = 1); MathWorks
  justifies it in the MATLAB Answers entry "Why does the function silhouette give a value of 1 for singleton
  clusters instead of 0?" (Statistics and Machine Learning Toolbox; read here through a mirror of the answer,
  imathworks.com): a singleton is the cluster it defines, and a 0 would mark it as a border point;
- ``"exclude"``: singletons are left out of the mean (the mean over members of clusters of two or more).

With F features of which n_1 are singletons and s_zero the scikit-learn mean: s_one = s_zero + n_1 / F and
s_exclude = s_zero F / (F - n_1). 38 clusters of 56 features hold at least 20 singletons, so s_zero <= 36/56 = 0.643
there: the study's 0.79 at 38 clusters is impossible under "zero" and natural under "one" (which software the
study used is not known here; MATLAB's convention is one that makes its number possible). The conventions pull in
opposite directions: "zero" favours few, large clusters (on weakly structured data its best cut can keep 2 of 56
features), "one" and "exclude" favour many singletons (their best cut is often the smallest one of the sweep).
Hence the guard below.

Guard (documented rule; ``select.min_clusters``, ``select.max_clusters``, ``select.max_cutoff``): a cut-off is
eligible when it gives between ``min_clusters`` and ``max_clusters`` clusters (each an integer, or a fraction of the
clustered features F: min rounded up, max rounded down) and is at most ``max_cutoff`` (None: no bound). The chosen
cut-off is the eligible one with the best silhouette under the configured convention (ties: the smallest cut-off).
The unguarded best is kept in the result, and a warning names both when they differ.

Defaults and why: singletons "one" (MATLAB; the study's point is reachable) within the band 0.25 F <= clusters <=
0.75 F (14 to 42 of 56): each end of the band stops one convention's degenerate optimum. Measured with average
linkage on the 56 features over 92,226 real lung voxels (NSCLC-Radiomics LUNG1-001, one 3D CT at 2 mm, 12 central
slices, ``vent features``; CC 0.85): unguarded, "zero" picks cut-off 0.59, 2 clusters (0.62), the collapse seen
on the semi-real cohort, and "one" picks 0.01, 41 clusters (0.93). On the demo cohort (CC 0.76) "zero" picks
0.15, 17 clusters (0.60) and "one" 0.01, 43 clusters (0.93). With the band: real lung "zero" 0.09 / 15 clusters,
"one" 0.01 / 41; demo "zero" 0.15 / 17, "one" 0.02 / 39 (silhouette 0.87, near the study's 0.02 / 38 / 0.79).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from vent.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

# Linkages that are valid on an arbitrary (non-Euclidean) distance matrix; ward, centroid and median are not.
SUPPORTED_LINKAGES = ("average", "complete", "single", "weighted")

DEFAULT_CUTOFFS: tuple[float, ...] = tuple(round(0.01 * k, 2) for k in range(1, 100))

SINGLETON_CONVENTIONS: tuple[str, ...] = ("zero", "one", "exclude")
# MATLAB's convention: the only one under which the study's operating point (38 clusters, silhouette 0.79) exists.
DEFAULT_SINGLETON = "one"
# Guard defaults: between a quarter and three quarters of the clustered features stay (14 to 42 of 56).
DEFAULT_MIN_CLUSTERS: float = 0.25
DEFAULT_MAX_CLUSTERS: float | None = 0.75
DEFAULT_MAX_CUTOFF: float | None = None


@dataclass
class SweepPoint:
    """One cut-off of the sweep.

    Attributes:
        cutoff: Cut-off distance (1 - |r|).
        n_clusters: Clusters at this cut-off.
        n_singletons: Clusters of one feature.
        silhouette: Mean silhouette under each convention (``SINGLETON_CONVENTIONS``); None where undefined
            (1 or F clusters).
        eligible: Whether the guard allows this cut-off.
    """

    cutoff: float
    n_clusters: int
    n_singletons: int
    silhouette: dict[str, float | None]
    eligible: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "cutoff": self.cutoff,
            "n_clusters": self.n_clusters,
            "n_singletons": self.n_singletons,
            "silhouette": dict(self.silhouette),
            "eligible": self.eligible,
        }


@dataclass
class ClusterResult:
    """Outcome of ``cluster_features``.

    Attributes:
        labels: Cluster of each feature, 1-based, shape (F,).
        cophenetic_cc: Cophenetic correlation coefficient of the dendrogram.
        cutoff: Chosen cut-off distance (1 - |r|).
        silhouette: Silhouette coefficient at the chosen cut-off, under ``singleton``.
        n_clusters: Number of clusters at the chosen cut-off.
        sweep: (cutoff, n_clusters, silhouette under ``singleton``) for every cut-off tried; silhouette is None
            where undefined (1 or F clusters).
        linkage: Linkage method used.
        linkage_matrix: scipy linkage matrix, shape (F - 1, 4).
        singleton: Singleton convention that selected the cut-off.
        n_singletons: Singleton clusters at the chosen cut-off.
        sweep_points: Every cut-off with its silhouette under every convention and whether the guard allows it.
        by_convention: For each convention, the cut-off it selects under the same guard: cutoff, n_clusters,
            n_singletons, silhouette (its own), selected (whether it is ``singleton``), unguarded (its best cut-off
            without the guard: cutoff, n_clusters, silhouette).
        guard: The guard: min_clusters and max_clusters (resolved counts; max None = no ceiling), their settings
            (min_clusters_setting, max_clusters_setting), max_cutoff, unguarded (the best cut-off without the
            guard: cutoff, n_clusters, silhouette), changed (the guard moved the choice), bounded_by (the rules that
            excluded the unguarded best: "min_clusters", "max_clusters", "max_cutoff").
    """

    labels: np.ndarray
    cophenetic_cc: float
    cutoff: float
    silhouette: float
    n_clusters: int
    sweep: list[tuple[float, int, float | None]]
    linkage: str
    linkage_matrix: np.ndarray = field(repr=False)
    singleton: str = DEFAULT_SINGLETON
    n_singletons: int = 0
    sweep_points: list[SweepPoint] = field(default_factory=list, repr=False)
    by_convention: dict[str, dict[str, Any]] = field(default_factory=dict)
    guard: dict[str, Any] = field(default_factory=dict)


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


def _check_convention(singleton: str) -> None:
    if singleton not in SINGLETON_CONVENTIONS:
        raise ConfigError(
            f"select.singleton_silhouette = {singleton!r} is not valid; use one of {', '.join(SINGLETON_CONVENTIONS)}."
        )


def silhouette_samples(distance_ff: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature silhouette on a precomputed distance matrix (Rousseeuw 1987), singletons at 0.

    a(i) = mean_{j in C(i), j != i} d_ij; b(i) = min_{C != C(i)} mean_{j in C} d_ij;
    s(i) = (b(i) - a(i)) / max(a(i), b(i)), with s(i) = 0 where a(i) = b(i) = 0 and for singletons, exactly as
    scikit-learn's ``silhouette_samples(metric="precomputed")``.

    Args:
        distance_ff: Symmetric distances, shape (F, F), zero diagonal.
        labels: Cluster of each feature, shape (F,), 2 <= number of clusters <= F - 1.

    Returns:
        s: Silhouette of each feature, shape (F,); singleton: whether its cluster has one member, shape (F,).

    Raises:
        DataError: Shapes disagree, or the labels give fewer than 2 or more than F - 1 clusters.
    """
    distance_ff = np.asarray(distance_ff, dtype=np.float64)
    labels = np.asarray(labels)
    n_features = distance_ff.shape[0]
    if distance_ff.shape != (n_features, n_features) or labels.shape != (n_features,):
        raise DataError(f"distances {distance_ff.shape} and labels {labels.shape} must be (F, F) and (F,).")
    _, index = np.unique(labels, return_inverse=True)
    counts = np.bincount(index)
    n_clusters = len(counts)
    if not 2 <= n_clusters <= n_features - 1:
        raise DataError(f"the silhouette needs 2 to {n_features - 1} clusters; got {n_clusters}.")
    one_hot = np.zeros((n_features, n_clusters))
    one_hot[np.arange(n_features), index] = 1.0
    sums = distance_ff @ one_hot  # (F, K): summed distance of each feature to each cluster
    own = sums[np.arange(n_features), index]
    size = counts[index]
    singleton = size == 1
    with np.errstate(divide="ignore", invalid="ignore"):
        intra = np.where(singleton, 0.0, own / np.maximum(size - 1, 1))
        mean_to = sums / counts
    mean_to[np.arange(n_features), index] = np.inf
    inter = mean_to.min(axis=1)
    denominator = np.maximum(intra, inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(denominator > 0, (inter - intra) / denominator, 0.0)
    s[singleton] = 0.0
    return s, singleton


def silhouette(distance_ff: np.ndarray, labels: np.ndarray, singleton: str = DEFAULT_SINGLETON) -> float:
    """Mean silhouette under a singleton convention (see the module docstring).

    s_zero = mean_i s(i) with s(i) = 0 for singletons (= sklearn ``silhouette_score``);
    s_one = s_zero + n_1 / F; s_exclude = s_zero F / (F - n_1), n_1 = features in singleton clusters.

    Args:
        distance_ff: Symmetric distances, shape (F, F), zero diagonal.
        labels: Cluster of each feature, shape (F,), 2 to F - 1 clusters.
        singleton: "zero", "one" or "exclude".

    Returns:
        The mean silhouette, in [-1, 1].

    Raises:
        ConfigError: Unknown convention.
        DataError: Bad shapes or cluster count.
    """
    _check_convention(singleton)
    return _by_convention(*silhouette_samples(distance_ff, labels))[singleton]


def _by_convention(s: np.ndarray, singleton: np.ndarray) -> dict[str, float]:
    """Mean silhouette under every convention from the zero-convention samples."""
    return {
        "zero": float(s.mean()),
        "one": float(np.where(singleton, 1.0, s).mean()),
        "exclude": float(s[~singleton].mean()),  # at most F - 1 clusters: at least one cluster of two
    }


def resolve_cluster_bound(value: float, n_features: int, key: str, round_up: bool) -> int:
    """Clusters a guard bound allows: a whole number >= 1 as given, a fraction in (0, 1) of the features F.

    The fraction is rounded up for the floor (``min_clusters``: ceil(value x F)) and down for the ceiling
    (``max_clusters``: floor(value x F)); the result is at least 2 (the silhouette needs two clusters).

    Args:
        value: Count (>= 1, whole) or fraction of the clustered features (0 < value < 1).
        n_features: Features clustered.
        key: Config key, for the error message ("min_clusters" or "max_clusters").
        round_up: Round a fraction up (floor bound) or down (ceiling bound).

    Returns:
        The bound as a number of clusters.

    Raises:
        ConfigError: Not positive, or a count that is not whole.
    """
    if not value > 0:
        raise ConfigError(f"select.{key} = {value!r} must be > 0 (a count, or a fraction of the features below 1).")
    if value < 1:
        scaled = value * n_features
        return max(2, math.ceil(scaled - 1e-9) if round_up else math.floor(scaled + 1e-9))
    if float(value) != int(value):
        raise ConfigError(f"select.{key} = {value!r}: a value >= 1 is a count of clusters and must be whole.")
    return max(2, int(value))


def _choose(points: list[SweepPoint], convention: str, eligible_only: bool) -> SweepPoint | None:
    """Best cut-off under ``convention`` (ties: the smallest cut-off; points are in increasing cut-off)."""
    best: SweepPoint | None = None
    for point in points:
        score = point.silhouette[convention]
        if score is None or (eligible_only and not point.eligible):
            continue
        if best is None or score > best.silhouette[convention]:
            best = point
    return best


def cluster_features(
    corr_ff: np.ndarray,
    linkage: str = "average",
    cutoffs: Sequence[float] | None = None,
    singleton: str = DEFAULT_SINGLETON,
    min_clusters: float = DEFAULT_MIN_CLUSTERS,
    max_clusters: float | None = DEFAULT_MAX_CLUSTERS,
    max_cutoff: float | None = DEFAULT_MAX_CUTOFF,
) -> ClusterResult:
    """Cluster features hierarchically and cut the dendrogram at the best-silhouette distance the guard allows.

    Steps: d = 1 - |r|; Z = scipy linkage on the condensed d; cophenetic CC = Pearson r between d and the cophenetic
    distances of Z (Sokal & Rohlf 1962); for each cut-off c, labels = fcluster(Z, c, "distance") and the mean
    silhouette (Rousseeuw 1987) on the precomputed d under every singleton convention; cut-offs giving 1 or F
    clusters are skipped; c is eligible when min_clusters <= clusters <= max_clusters and c <= max_cutoff; the chosen c
    maximises the silhouette under ``singleton`` among eligible cut-offs (ties: the smallest c).

    Args:
        corr_ff: Feature correlation matrix, shape (F, F), F >= 3, finite.
        linkage: One of "average" (default, UPGMA), "complete", "single", "weighted".
        cutoffs: Distances at which to cut; default 0.01, 0.02, ..., 0.99.
        singleton: Silhouette of a singleton cluster: "one" (default, MATLAB), "zero" (scikit-learn), "exclude".
        min_clusters: Guard: fewest clusters kept, a count or a fraction of F (default 0.25: 14 of 56).
        max_clusters: Guard: most clusters kept, a count or a fraction of F (default 0.75: 42 of 56); None = F - 1.
        max_cutoff: Guard: largest eligible cut-off distance; None = no bound.

    Returns:
        The clustering at the chosen cut-off, with the full sweep, each convention's choice and the guard.

    Raises:
        ConfigError: Unknown linkage or convention, a bad guard, or no cut-off that the guard allows.
        DataError: The matrix is not square, too small, or not finite.
    """
    if linkage not in SUPPORTED_LINKAGES:
        raise ConfigError(
            f"selection.linkage = {linkage!r} is not supported; use one of {', '.join(SUPPORTED_LINKAGES)} "
            "(ward/centroid/median need Euclidean distances, and 1 - |r| is not one)."
        )
    _check_convention(singleton)
    if max_cutoff is not None and not 0.0 < max_cutoff:
        raise ConfigError(f"select.max_cutoff = {max_cutoff!r} must be > 0 (a distance 1 - |r|) or null.")
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
    floor = resolve_cluster_bound(min_clusters, n_features, "min_clusters", round_up=True)
    ceiling = None if max_clusters is None else resolve_cluster_bound(max_clusters, n_features, "max_clusters", False)
    if ceiling is not None and ceiling < floor:
        raise ConfigError(
            f"select.max_clusters = {max_clusters:g} ({ceiling} clusters of {n_features} features) is below "
            f"select.min_clusters = {min_clusters:g} ({floor}); raise max_clusters or lower min_clusters."
        )

    distance_ff = correlation_distance(corr_ff)
    condensed = squareform(distance_ff, checks=False)
    linkage_matrix = hierarchy.linkage(condensed, method=linkage)
    cophenetic_cc = float(hierarchy.cophenet(linkage_matrix, condensed)[0])

    points: list[SweepPoint] = []
    labels_at: dict[float, np.ndarray] = {}
    for cutoff in cutoffs:
        labels = hierarchy.fcluster(linkage_matrix, t=cutoff, criterion="distance")
        n_clusters = int(labels.max())
        n_singletons = int((np.bincount(labels) == 1).sum())
        if n_clusters in (1, n_features):
            scores: dict[str, float | None] = dict.fromkeys(SINGLETON_CONVENTIONS)
        else:
            scores = dict(_by_convention(*silhouette_samples(distance_ff, labels)))
        eligible = (
            n_clusters >= floor
            and (ceiling is None or n_clusters <= ceiling)
            and (max_cutoff is None or cutoff <= max_cutoff)
        )
        points.append(SweepPoint(cutoff, n_clusters, n_singletons, scores, eligible))
        labels_at[cutoff] = labels
    unguarded = _choose(points, singleton, eligible_only=False)
    if unguarded is None:
        raise ConfigError(
            f"no cut-off in selection.cutoffs ({cutoffs[0]:g} .. {cutoffs[-1]:g}) gives between 2 and {n_features - 1}"
            " clusters, so no silhouette can be computed; widen the cut-off range."
        )
    chosen = _choose(points, singleton, eligible_only=True)
    if chosen is None:
        counts = sorted({p.n_clusters for p in points if p.silhouette[singleton] is not None})
        bound = "" if max_cutoff is None else f" at a cut-off <= select.max_cutoff = {max_cutoff:g}"
        raise ConfigError(
            f"no cut-off gives between {floor} (select.min_clusters = {min_clusters:g}) and "
            f"{n_features - 1 if ceiling is None else ceiling} (select.max_clusters = {max_clusters}) clusters of "
            f"{n_features} features{bound}; the sweep gives {counts[0]} to {counts[-1]} clusters. Widen the band, "
            "raise select.max_cutoff or change select.cutoffs."
        )
    bounded_by = []
    if unguarded is not chosen:
        if unguarded.n_clusters < floor:
            bounded_by.append("min_clusters")
        if ceiling is not None and unguarded.n_clusters > ceiling:
            bounded_by.append("max_clusters")
        if max_cutoff is not None and unguarded.cutoff > max_cutoff:
            bounded_by.append("max_cutoff")
        logger.warning(
            "selection guard changed the cut-off: the best %s-convention silhouette %.3f is at cut-off %.3g with %d "
            "clusters of %d features, excluded by %s (min_clusters %d, max_clusters %s, max_cutoff %s); chose cut-off "
            "%.3g with %d clusters, silhouette %.3f",
            singleton,
            unguarded.silhouette[singleton],
            unguarded.cutoff,
            unguarded.n_clusters,
            n_features,
            " and ".join(bounded_by),
            floor,
            "none" if ceiling is None else ceiling,
            "none" if max_cutoff is None else f"{max_cutoff:g}",
            chosen.cutoff,
            chosen.n_clusters,
            chosen.silhouette[singleton],
        )
    by_convention: dict[str, dict[str, Any]] = {}
    for convention in SINGLETON_CONVENTIONS:
        point = _choose(points, convention, eligible_only=True)
        free = _choose(points, convention, eligible_only=False)
        by_convention[convention] = {
            "cutoff": point.cutoff,
            "n_clusters": point.n_clusters,
            "n_singletons": point.n_singletons,
            "silhouette": point.silhouette[convention],
            "selected": convention == singleton,
            "unguarded": {
                "cutoff": free.cutoff,
                "n_clusters": free.n_clusters,
                "silhouette": free.silhouette[convention],
            },
        }
    score = float(chosen.silhouette[singleton])
    labels = labels_at[chosen.cutoff]
    logger.info(
        "feature clustering (%s): cophenetic CC %.3f, cut-off %.3g, silhouette %.3f (singletons %s; zero %.3f, "
        "one %.3f, exclude %.3f), %d clusters (%d singletons) of %d features",
        linkage,
        cophenetic_cc,
        chosen.cutoff,
        score,
        singleton,
        chosen.silhouette["zero"],
        chosen.silhouette["one"],
        chosen.silhouette["exclude"],
        chosen.n_clusters,
        chosen.n_singletons,
        n_features,
    )
    if cophenetic_cc < 0.75:
        logger.warning("cophenetic CC %.3f is below 0.75: the dendrogram distorts the distances", cophenetic_cc)
    return ClusterResult(
        labels=labels,
        cophenetic_cc=cophenetic_cc,
        cutoff=chosen.cutoff,
        silhouette=score,
        n_clusters=chosen.n_clusters,
        sweep=[(p.cutoff, p.n_clusters, p.silhouette[singleton]) for p in points],
        linkage=linkage,
        linkage_matrix=linkage_matrix,
        singleton=singleton,
        n_singletons=chosen.n_singletons,
        sweep_points=points,
        by_convention=by_convention,
        guard={
            "min_clusters": floor,
            "max_clusters": ceiling,
            "min_clusters_setting": min_clusters,
            "max_clusters_setting": max_clusters,
            "max_cutoff": max_cutoff,
            "unguarded": {
                "cutoff": unguarded.cutoff,
                "n_clusters": unguarded.n_clusters,
                "silhouette": unguarded.silhouette[singleton],
            },
            "changed": unguarded is not chosen,
            "bounded_by": bounded_by,
        },
    )
