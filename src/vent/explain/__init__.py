"""Temporal saliency of the sequence models: Integrated Gradients, the study's TSM and TSR, pooling, sanity checks."""

from vent.explain.attribution import IG_METHOD, integrated_gradients
from vent.explain.explainer import ExplainResult, explain_sample, probability_forward
from vent.explain.pooling import IMPORTANCE_DEFINITION, FoldMap, PooledImportance, pool_fold_maps, relative_map
from vent.explain.sampling import stratified_voxel_sample
from vent.explain.sanity import deletion_check, model_randomisation_check, randomisation_subset
from vent.explain.temporal_saliency import (
    normalise_maps,
    sequence_importance,
    study_temporal_saliency,
    tsr_saliency,
)

__all__ = [
    "IG_METHOD",
    "IMPORTANCE_DEFINITION",
    "ExplainResult",
    "FoldMap",
    "PooledImportance",
    "deletion_check",
    "explain_sample",
    "integrated_gradients",
    "model_randomisation_check",
    "normalise_maps",
    "pool_fold_maps",
    "probability_forward",
    "randomisation_subset",
    "relative_map",
    "sequence_importance",
    "stratified_voxel_sample",
    "study_temporal_saliency",
    "tsr_saliency",
]
