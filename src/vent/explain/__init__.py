"""Temporal saliency of the sequence models: Integrated Gradients, the study's TSM and TSR, and sanity checks."""

from vent.explain.attribution import integrated_gradients
from vent.explain.explainer import ExplainResult, explain_sample, probability_forward
from vent.explain.sampling import stratified_voxel_sample
from vent.explain.sanity import deletion_check
from vent.explain.temporal_saliency import (
    normalise_maps,
    sequence_importance,
    study_temporal_saliency,
    tsr_saliency,
)

__all__ = [
    "ExplainResult",
    "deletion_check",
    "explain_sample",
    "integrated_gradients",
    "normalise_maps",
    "probability_forward",
    "sequence_importance",
    "stratified_voxel_sample",
    "study_temporal_saliency",
    "tsr_saliency",
]
