"""Feature selection (study section 4.5): correlation clustering of the radiomic features, one kept per cluster."""

from vent.selection.clustering import (
    SINGLETON_CONVENTIONS,
    ClusterResult,
    SweepPoint,
    cluster_features,
    correlation_distance,
    silhouette,
    silhouette_samples,
)
from vent.selection.correlation import PhaseCorrelation
from vent.selection.ranking import choose_representatives, sample_voxels, spearman_with_target
from vent.selection.select import SelectionResult, select_features

__all__ = [
    "SINGLETON_CONVENTIONS",
    "ClusterResult",
    "PhaseCorrelation",
    "SelectionResult",
    "SweepPoint",
    "choose_representatives",
    "cluster_features",
    "correlation_distance",
    "sample_voxels",
    "select_features",
    "silhouette",
    "silhouette_samples",
    "spearman_with_target",
]
