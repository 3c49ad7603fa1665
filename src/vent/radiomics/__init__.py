"""Voxel-wise radiomic filtering: the 56 features of the study's Table 1 per voxel (IBSI definitions).

Public API: :data:`FEATURES`, :data:`FEATURE_IDS`, :class:`FilterSettings`, :func:`kernel_voxels_from_mm`,
:func:`discretise`, :func:`compute_voxel_features`, :func:`compute_roi_features`, :func:`write_feature_maps`.
Arrays are (Z, Y, X) as SimpleITK's GetArrayFromImage returns them.
"""

from vent.radiomics.discretisation import discretise
from vent.radiomics.engine import compute_roi_features, compute_voxel_features
from vent.radiomics.features import FEATURE_IDS, FEATURES, FeatureSpec
from vent.radiomics.settings import FilterSettings, kernel_voxels_from_mm

__all__ = [
    "FEATURES",
    "FEATURE_IDS",
    "FeatureSpec",
    "FilterSettings",
    "compute_roi_features",
    "compute_voxel_features",
    "discretise",
    "kernel_voxels_from_mm",
    "write_feature_maps",
]


def __getattr__(name: str):
    if name == "write_feature_maps":  # file I/O lives in maps.py; imported lazily to keep this package light
        from vent.radiomics.maps import write_feature_maps

        return write_feature_maps
    raise AttributeError(name)
