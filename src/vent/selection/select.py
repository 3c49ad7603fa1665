"""Feature selection over a list of patients' radiomics files (study section 4.5).

Reads: only the ``<run_dir>/radiomics/<case>.h5`` files it is given (datasets ``/features`` (n, T, F), ``/labels``
(n,), ``/refvi`` (n,), attribute ``feature_ids``). It is the caller's job to pass all patients (mode ``paper``) or
the training patients of one fold (mode ``nested``); nothing else is read, so no label can leak from test patients.

Steps: stream per-phase Pearson correlation over all voxels of all given patients; average it over phases;
cluster the features (``cluster_features``: best silhouette under the configured singleton convention, within the
guard's band of cluster counts); score each feature by its mean |Spearman| with the target on a
stratified voxel sample per patient; keep the best-scoring feature of each cluster. Features that are constant at
every phase carry no information: they are excluded from clustering and selection and listed in the result.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from vent.errors import ConfigError, DataError
from vent.selection.clustering import (
    DEFAULT_MAX_CLUSTERS,
    DEFAULT_MAX_CUTOFF,
    DEFAULT_MIN_CLUSTERS,
    DEFAULT_SINGLETON,
    ClusterResult,
    cluster_features,
)
from vent.selection.correlation import PhaseCorrelation
from vent.selection.ranking import choose_representatives, sample_voxels, spearman_with_target

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_VOXELS = 4096


@dataclass
class SelectionResult:
    """Outcome of ``select_features``.

    Attributes:
        selected: Ids of the kept features, in Table 1 (file) order.
        feature_ids: All F feature ids, in file order.
        cluster_labels: Cluster of each feature, shape (F,); 0 for features excluded as constant.
        clustering: Clustering of the non-constant features (cophenetic CC, cut-off, silhouette, sweep).
        spearman: Mean |Spearman rho| with the target per feature, shape (F,).
        correlation: Pearson correlation averaged over phases, shape (F, F).
        constant_features: Ids of features constant at every phase (excluded).
        partly_constant_features: Ids of features constant at some but not all phases (kept).
        cases: Names of the files read, in the order given.
        n_voxels: Voxels pooled in the correlation.
        n_sampled: Voxels used for the Spearman scores.
        target: "defect" or "refvi".
        linkage: Linkage method.
        seed: Seed of the voxel sampling.
    """

    selected: list[str]
    feature_ids: list[str]
    cluster_labels: np.ndarray
    clustering: ClusterResult
    spearman: np.ndarray
    correlation: np.ndarray
    constant_features: list[str]
    partly_constant_features: list[str]
    cases: list[str]
    n_voxels: int
    n_sampled: int
    target: str
    linkage: str
    seed: int
    correlation_per_phase: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))

    @property
    def cophenetic_cc(self) -> float:
        """Cophenetic correlation coefficient of the dendrogram."""
        return self.clustering.cophenetic_cc

    @property
    def silhouette(self) -> float:
        """Silhouette coefficient at the chosen cut-off."""
        return self.clustering.silhouette

    @property
    def cutoff(self) -> float:
        """Chosen cut-off distance (1 - |r|)."""
        return self.clustering.cutoff

    @property
    def singleton(self) -> str:
        """Singleton-silhouette convention that selected the cut-off."""
        return self.clustering.singleton

    @property
    def sweep(self) -> list[tuple[float, int, float | None]]:
        """(cutoff, n_clusters, silhouette) for every cut-off tried."""
        return self.clustering.sweep

    @property
    def clustered_feature_ids(self) -> list[str]:
        """Ids of the features that entered the clustering (all but the constant ones), in file order: the leaves
        of ``clustering.linkage_matrix`` are indices into this list."""
        return [f for f, label in zip(self.feature_ids, self.cluster_labels.tolist()) if label > 0]

    def clusters(self) -> dict[int, list[str]]:
        """Feature ids of each cluster (excluded constant features are not listed)."""
        groups: dict[int, list[str]] = {}
        for feature_id, label in zip(self.feature_ids, self.cluster_labels.tolist()):
            if label > 0:
                groups.setdefault(int(label), []).append(feature_id)
        return groups

    def clustering_summary(self) -> dict[str, Any]:
        """The chosen cut, what each singleton convention would choose, and the guard (JSON-ready).

        Keys: cophenetic_cc, cutoff, silhouette, n_clusters, n_singletons (the chosen cut, silhouette under the
        selecting convention); singleton_silhouette (that convention); silhouette_by_convention (every convention's
        score at the chosen cut); by_convention ({convention: {cutoff, n_clusters, n_singletons, silhouette,
        selected, unguarded}}: the cut each convention selects under the same guard, and without it); guard (see
        ``ClusterResult.guard``).
        """
        clustering = self.clustering
        chosen = next((p for p in clustering.sweep_points if p.cutoff == clustering.cutoff), None)
        return {
            "cophenetic_cc": self.cophenetic_cc,
            "cutoff": self.cutoff,
            "silhouette": self.silhouette,
            "n_clusters": clustering.n_clusters,
            "n_singletons": clustering.n_singletons,
            "singleton_silhouette": clustering.singleton,
            "silhouette_by_convention": {} if chosen is None else dict(chosen.silhouette),
            "by_convention": {k: dict(v) for k, v in clustering.by_convention.items()},
            "guard": dict(clustering.guard),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (plain lists, floats and strings).

        ``sweep`` entries: cutoff, n_clusters, silhouette (under the selecting convention, as the figure plots it),
        n_singletons, silhouette_by_convention ({zero, one, exclude}) and eligible (allowed by the guard).

        The dendrogram: ``linkage_matrix`` is the scipy linkage matrix Z that was cut, shape (F_c - 1, 4) (merged
        clusters i and j, their distance 1 - |r|, the size of the merge), over the F_c features that entered the
        clustering; ``linkage_feature_ids`` lists them, leaf i of Z being ``linkage_feature_ids[i]``. They are
        ``feature_ids`` less ``constant_features``, in the same order. ``correlation`` covers all F ``feature_ids``
        in file order (a constant feature's row and column are 0), so Z's leaf i is row
        ``feature_ids.index(linkage_feature_ids[i])`` of it; ``fcluster(Z, cutoff, "distance")`` gives the cluster
        labels of ``clusters``.
        """
        summary = self.clustering_summary()
        return {
            "selected": list(self.selected),
            "n_selected": len(self.selected),
            "feature_ids": list(self.feature_ids),
            "clusters": {str(k): v for k, v in self.clusters().items()},
            **summary,
            "sweep": [
                {
                    "cutoff": p.cutoff,
                    "n_clusters": p.n_clusters,
                    "silhouette": p.silhouette[self.singleton],
                    "n_singletons": p.n_singletons,
                    "silhouette_by_convention": dict(p.silhouette),
                    "eligible": p.eligible,
                }
                for p in self.clustering.sweep_points
            ],
            "spearman": dict(zip(self.feature_ids, map(float, self.spearman))),
            "correlation": self.correlation.tolist(),
            "linkage_matrix": np.asarray(self.clustering.linkage_matrix, dtype=np.float64).tolist(),
            "linkage_feature_ids": self.clustered_feature_ids,
            "constant_features": list(self.constant_features),
            "partly_constant_features": list(self.partly_constant_features),
            "cases": list(self.cases),
            "n_voxels": self.n_voxels,
            "n_sampled": self.n_sampled,
            "target": self.target,
            "linkage": self.linkage,
            "seed": self.seed,
        }


@dataclass
class _CaseInfo:
    path: Path
    n_voxels: int
    shape_tf: tuple[int, int]
    feature_ids: list[str]
    sample_index: np.ndarray
    target_sampled: np.ndarray


def _case_seed(seed: int, case_name: str) -> int:
    """Seed for one patient that does not depend on which other patients are in the list."""
    return int(np.random.SeedSequence([seed, zlib.crc32(case_name.encode())]).generate_state(1)[0])


def _read_case_info(path: Path, target: str, max_voxels_per_case: int, seed: int) -> _CaseInfo:
    """Read shapes, feature ids, labels and target of one radiomics file and draw its voxel sample."""
    # NOTE: the only HDF5 layout knowledge of this package; move to vent.io when a radiomics reader exists there.
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"cannot open radiomics file {path}: {error}. Re-run the radiomics stage.") from error
    with handle:
        for name in ("features", "labels", target_dataset(target)):
            if name not in handle:
                raise DataError(f"{path} has no /{name} dataset; re-run the radiomics stage.")
        features = handle["features"]
        if features.ndim != 3:
            raise DataError(f"{path}:/features must be (n_voxels, T, F); got shape {features.shape}.")
        n_voxels, n_phases, n_features = features.shape
        feature_ids = [str(f.decode() if isinstance(f, bytes) else f) for f in features.attrs.get("feature_ids", [])]
        if len(feature_ids) != n_features:
            raise DataError(
                f"{path}:/features has {n_features} features but its feature_ids attribute lists {len(feature_ids)}."
            )
        labels = handle["labels"][...]
        target_values = handle[target_dataset(target)][...]
    if labels.shape != (n_voxels,) or target_values.shape != (n_voxels,):
        raise DataError(
            f"{path}: /labels {labels.shape} and /{target_dataset(target)} {target_values.shape} must both have "
            f"shape ({n_voxels},) like /features."
        )
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"{path}:/labels must contain only 0 (healthy) and 1 (defect).")
    index = sample_voxels(n_voxels, max_voxels_per_case, labels, _case_seed(seed, path.name))
    return _CaseInfo(
        path=path,
        n_voxels=n_voxels,
        shape_tf=(n_phases, n_features),
        feature_ids=feature_ids,
        sample_index=index,
        target_sampled=np.asarray(target_values[index], dtype=np.float64),
    )


def target_dataset(target: str) -> str:
    """Name of the dataset holding the selection target: "labels" for "defect", "refvi" for "refvi"."""
    return {"defect": "labels", "refvi": "refvi"}[target]


def _stream_case(
    info: _CaseInfo, accumulator: PhaseCorrelation, sampled_out: np.ndarray, chunk_voxels: int
) -> None:
    """Stream one file's features in contiguous chunks into the accumulator and copy out the sampled voxels."""
    with h5py.File(info.path, "r") as handle:
        features = handle["features"]
        storage_chunk = features.chunks[0] if features.chunks else 1
        step = max(1, chunk_voxels // storage_chunk) * storage_chunk
        for start in range(0, info.n_voxels, step):
            stop = min(start + step, info.n_voxels)
            chunk = features[start:stop]
            if not np.isfinite(chunk).all():
                raise DataError(
                    f"{info.path}:/features has NaN or infinite values in voxels {start}..{stop - 1}. The radiomics "
                    "stage resolves undefined kernels by radiomics.empty_kernel and never writes NaN, so the file is "
                    "from an older vent or was altered: delete it and run `vent run CONFIG --from radiomics`."
                )
            accumulator.update(chunk)
            lo, hi = np.searchsorted(info.sample_index, [start, stop])
            if hi > lo:
                sampled_out[lo:hi] = chunk[info.sample_index[lo:hi] - start]


def _checked_files(files: Sequence[Path], target: str) -> list[Path]:
    """The given files as Paths, after checking the target name and that each file is given once and exists."""
    if target not in ("defect", "refvi"):
        raise ConfigError(f"selection.target = {target!r} is not valid; use 'defect' or 'refvi'.")
    files = [Path(f) for f in files]
    if not files:
        raise DataError("feature selection was given no radiomics files; check the patient list / fold split.")
    if len(set(files)) != len(files):
        raise DataError("feature selection was given the same radiomics file twice; check the patient list.")
    for path in files:
        if not path.is_file():
            raise DataError(f"radiomics file {path} does not exist; run the radiomics stage for this patient first.")
    return files


def _read_cases(files: list[Path], target: str, max_voxels_per_case: int, seed: int) -> list[_CaseInfo]:
    """Every file's shapes, feature ids and voxel sample, checked to share one T x F and one feature list."""
    infos = [_read_case_info(path, target, max_voxels_per_case, seed) for path in files]
    reference = infos[0]
    for info in infos[1:]:
        if info.shape_tf != reference.shape_tf or info.feature_ids != reference.feature_ids:
            raise DataError(
                f"{info.path} has T x F = {info.shape_tf} with features {info.feature_ids[:3]}... but "
                f"{reference.path} has {reference.shape_tf} with {reference.feature_ids[:3]}...; all patients must "
                "come from the same radiomics configuration."
            )
    n_phases, n_features = reference.shape_tf
    n_sampled = sum(len(info.sample_index) for info in infos)
    logger.info(
        "feature selection on %d patients: %d voxels, %d sampled for Spearman (%.2f GB), T=%d, F=%d",
        len(infos),
        sum(info.n_voxels for info in infos),
        n_sampled,
        n_sampled * n_phases * n_features * 4 / 1e9,
        n_phases,
        n_features,
    )
    return infos


@dataclass(frozen=True)
class _PooledData:
    """What streaming the files yields: the pooled correlation accumulator and the sampled voxels with their target."""

    accumulator: PhaseCorrelation
    sampled_ntf: np.ndarray
    target_sampled: np.ndarray


def _stream_cases(
    infos: list[_CaseInfo], chunk_voxels: int, progress: Callable[[int, int], None] | None
) -> _PooledData:
    """Stream every file once: pool the per-phase correlation and gather the sampled voxels (n, T, F) float32."""
    n_phases, n_features = infos[0].shape_tf
    n_sampled = sum(len(info.sample_index) for info in infos)
    sampled_ntf = np.empty((n_sampled, n_phases, n_features), dtype=np.float32)
    accumulator = PhaseCorrelation()
    offset = 0
    for done, info in enumerate(infos, start=1):
        case_accumulator = PhaseCorrelation()
        size = len(info.sample_index)
        _stream_case(info, case_accumulator, sampled_ntf[offset : offset + size], chunk_voxels)
        accumulator.merge(case_accumulator)
        offset += size
        if progress is not None:
            progress(done, len(infos))
    target_sampled = np.concatenate([info.target_sampled for info in infos])
    return _PooledData(accumulator, sampled_ntf, target_sampled)


def _varying_features(
    constant_tf: np.ndarray, feature_ids: list[str], n_voxels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(always_constant (F,), partly_constant (F,), kept indices) from the per-phase constancy (T, F)."""
    always_constant = constant_tf.all(axis=0)
    partly_constant = constant_tf.any(axis=0) & ~always_constant
    kept = np.flatnonzero(~always_constant)
    if always_constant.any():
        logger.warning(
            "features constant over all %d voxels at every phase are excluded from selection: %s",
            n_voxels,
            [feature_ids[i] for i in np.flatnonzero(always_constant)],
        )
    if len(kept) < 3:
        raise DataError(f"only {len(kept)} features vary over the given patients; at least 3 are needed to cluster.")
    return always_constant, partly_constant, kept


@dataclass(frozen=True)
class _ClusterOptions:
    """The clustering settings of ``select_features`` (see ``cluster_features``)."""

    linkage: str
    cutoffs: Sequence[float] | None
    singleton: str
    min_clusters: float
    max_clusters: float | None
    max_cutoff: float | None

    def cluster(self, correlation_ff: np.ndarray) -> ClusterResult:
        """``cluster_features`` of a correlation matrix under these settings."""
        return cluster_features(
            correlation_ff,
            linkage=self.linkage,
            cutoffs=self.cutoffs,
            singleton=self.singleton,
            min_clusters=self.min_clusters,
            max_clusters=self.max_clusters,
            max_cutoff=self.max_cutoff,
        )


def _selected_ids(
    clustering: ClusterResult, spearman: np.ndarray, kept: np.ndarray, feature_ids: list[str]
) -> list[str]:
    """The best-scoring feature of each cluster of the kept features, in file order."""
    kept_ids = [feature_ids[i] for i in kept]
    selected_kept = set(choose_representatives(clustering.labels, spearman[kept], kept_ids))
    return [f for f in feature_ids if f in selected_kept]


def _select(
    infos: list[_CaseInfo], pooled: _PooledData, options: _ClusterOptions, target: str, seed: int
) -> SelectionResult:
    """Exclude constant features, cluster the others, score all against the target and keep one per cluster."""
    accumulator = pooled.accumulator
    feature_ids = infos[0].feature_ids
    n_features = len(feature_ids)
    correlation_tff = accumulator.per_phase()
    correlation_ff = accumulator.averaged()
    always_constant, partly_constant, kept = _varying_features(
        accumulator.constant_features(), feature_ids, accumulator.count
    )
    clustering = options.cluster(correlation_ff[np.ix_(kept, kept)])
    cluster_labels = np.zeros(n_features, dtype=np.int64)
    cluster_labels[kept] = clustering.labels
    spearman = spearman_with_target(pooled.sampled_ntf, pooled.target_sampled)
    selected = _selected_ids(clustering, spearman, kept, feature_ids)
    logger.info("selected %d of %d features: %s", len(selected), n_features, selected)
    return SelectionResult(
        selected=selected,
        feature_ids=feature_ids,
        cluster_labels=cluster_labels,
        clustering=clustering,
        spearman=spearman,
        correlation=correlation_ff,
        constant_features=[feature_ids[i] for i in np.flatnonzero(always_constant)],
        partly_constant_features=[feature_ids[i] for i in np.flatnonzero(partly_constant)],
        cases=[info.path.name for info in infos],
        n_voxels=accumulator.count,
        n_sampled=len(pooled.sampled_ntf),
        target=target,
        linkage=options.linkage,
        seed=seed,
        correlation_per_phase=correlation_tff,
    )


def select_features(
    files: Sequence[Path],
    *,
    linkage: str = "average",
    cutoffs: Sequence[float] | None = None,
    singleton: str = DEFAULT_SINGLETON,
    min_clusters: float = DEFAULT_MIN_CLUSTERS,
    max_clusters: float | None = DEFAULT_MAX_CLUSTERS,
    max_cutoff: float | None = DEFAULT_MAX_CUTOFF,
    max_voxels_per_case: int = 20000,
    target: Literal["defect", "refvi"] = "defect",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    chunk_voxels: int = DEFAULT_CHUNK_VOXELS,
) -> SelectionResult:
    """Select one radiomic feature per correlation cluster, from the given patients only.

    Memory: the Spearman sample holds n_cases x max_voxels_per_case x T x F float32 values (45 x 20000 x 10 x 56
    = 2 GB); lower ``max_voxels_per_case`` for large cohorts. The correlation itself is streamed (O(T F^2)).

    Args:
        files: Radiomics files (``<run_dir>/radiomics/<case>.h5``) of the patients to use; only these are opened.
        linkage: Hierarchical linkage (see ``cluster_features``).
        cutoffs: Cut-off distances to sweep; default 0.01 .. 0.99.
        singleton: Silhouette of a singleton cluster, "one" (default), "zero" or "exclude" (see ``clustering``).
        min_clusters: Guard floor on the clusters (= features kept): a count or a fraction of the varying features.
        max_clusters: Guard ceiling on the clusters: a count or a fraction; None = no ceiling.
        max_cutoff: Guard: largest eligible cut-off distance; None = no bound.
        max_voxels_per_case: Voxels per patient sampled (stratified by label) for the Spearman scores.
        target: "defect" (binary ground truth, /labels) or "refvi" (continuous reference ventilation, /refvi).
        seed: Seed of the voxel sampling (per patient, independent of the other patients listed).
        progress: Called as progress(files_done, files_total) after each file is streamed.
        chunk_voxels: Voxels read per HDF5 read (rounded to whole storage chunks).

    Returns:
        The selection, its clustering and scores.

    Raises:
        ConfigError: Bad target, linkage, cut-offs, singleton convention or guard.
        DataError: No files, a missing or malformed file, or files that disagree on T or the feature ids.
    """
    infos = _read_cases(_checked_files(files, target), target, max_voxels_per_case, seed)
    pooled = _stream_cases(infos, chunk_voxels, progress)
    options = _ClusterOptions(linkage, cutoffs, singleton, min_clusters, max_clusters, max_cutoff)
    return _select(infos, pooled, options, target, seed)
