"""Temporal saliency of the sequence models: Integrated Gradients, the study's TSM and TSR, pooling, sanity checks,
and the key sequences' trends per patient with a confidence band over patients."""

from vent.explain.attribution import IG_METHOD, integrated_gradients
from vent.explain.explainer import ExplainResult, explain_sample, probability_forward
from vent.explain.pooling import IMPORTANCE_DEFINITION, FoldMap, PooledImportance, pool_fold_maps, relative_map
from vent.explain.sampling import stratified_voxel_sample
from vent.explain.sanity import (
    DELETION_CURVE_DEFINITION,
    deletion_check,
    deletion_curve,
    deletion_ks,
    model_randomisation_check,
    randomisation_subset,
)
from vent.explain.temporal_saliency import (
    normalise_maps,
    sequence_importance,
    study_temporal_saliency,
    tsr_saliency,
)
from vent.explain.trends import TREND_BAND_DEFINITION, TrendSummary, patient_confidence_band, summarise_trend

__all__ = [
    "DELETION_CURVE_DEFINITION",
    "IG_METHOD",
    "IMPORTANCE_DEFINITION",
    "TREND_BAND_DEFINITION",
    "ExplainResult",
    "FoldMap",
    "PooledImportance",
    "TrendSummary",
    "deletion_check",
    "deletion_curve",
    "deletion_ks",
    "explain_sample",
    "integrated_gradients",
    "model_randomisation_check",
    "normalise_maps",
    "patient_confidence_band",
    "pool_fold_maps",
    "probability_forward",
    "randomisation_subset",
    "relative_map",
    "sequence_importance",
    "stratified_voxel_sample",
    "study_temporal_saliency",
    "summarise_trend",
    "tsr_saliency",
]
