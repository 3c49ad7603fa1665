"""Feature selection (study section 4.5): correlation clustering of the radiomic features, one kept per cluster."""

from vent.selection.clustering import ClusterResult, cluster_features, correlation_distance
from vent.selection.correlation import PhaseCorrelation
from vent.selection.ranking import choose_representatives, sample_voxels, spearman_with_target
from vent.selection.select import SelectionResult, select_features

__all__ = [
    "ClusterResult",
    "PhaseCorrelation",
    "SelectionResult",
    "choose_representatives",
    "cluster_features",
    "correlation_distance",
    "sample_voxels",
    "select_features",
    "spearman_with_target",
]
