"""pyradiomics as an outside reference for tests and the benchmark (optional: ``pip install pyradiomics-bhklab``).

Maps pyradiomics voxel-based output onto vent's feature ids: IBSI excess kurtosis = pyradiomics kurtosis - 3;
sum variance = pyradiomics cluster tendency (its SumVariance is deprecated); dissimilarity = DifferenceAverage.
The three features pyradiomics lacks (median absolute deviation, coefficient of variation, quartile coefficient of
dispersion) are not returned.
"""

from __future__ import annotations

import logging

import numpy as np

from vent.errors import VentError
from vent.radiomics.features import FEATURES

logger = logging.getLogger(__name__)

#: Feature ids that pyradiomics also computes (53 of 56).
SHARED_FEATURE_IDS: tuple[str, ...] = tuple(spec.id for spec in FEATURES if spec.pyradiomics_name is not None)


def import_pyradiomics():
    """Import pyradiomics' feature classes, or raise VentError saying how to install them."""
    try:
        import radiomics
        from radiomics import firstorder, glcm, glrlm
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise VentError(
            "pyradiomics is not installed; it is an optional test/benchmark reference: "
            "pip install pyradiomics-bhklab==3.1.4"
        ) from error
    radiomics.setVerbosity(logging.ERROR)
    return firstorder, glcm, glrlm


def pyradiomics_voxel_features(
    image_zyx: np.ndarray,
    mask_zyx: np.ndarray,
    centers_zyx: np.ndarray,
    kernel_radius: int,
    bin_count: int = 64,
    spacing_xyz: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> dict[str, np.ndarray]:
    """pyradiomics voxel-based features at chosen centres (masked kernel, binCount discretisation over the mask).

    Args:
        image_zyx: Raw image (Z, Y, X).
        mask_zyx: ROI mask (Z, Y, X); also the kernel mask. Centres must lie inside it.
        centers_zyx: Centres, int (n, 3).
        kernel_radius: pyradiomics ``kernelRadius`` (13^3 kernel = 6).
        bin_count: pyradiomics ``binCount``.
        spacing_xyz: Voxel spacing (does not change these features).

    Returns:
        {vent feature id: values (n,)} for the 53 shared features, kurtosis already converted to excess kurtosis.
    """
    import SimpleITK as sitk

    firstorder, glcm, glrlm = import_pyradiomics()
    image = sitk.GetImageFromArray(np.asarray(image_zyx, dtype=np.float64))
    mask = sitk.GetImageFromArray(np.asarray(mask_zyx, dtype=np.uint8))
    image.SetSpacing(spacing_xyz)
    mask.SetSpacing(spacing_xyz)
    settings = dict(voxelBased=True, kernelRadius=kernel_radius, binCount=bin_count, maskedKernel=True,
                    initValue=np.nan, voxelBatch=-1)
    centres = np.asarray(centers_zyx, dtype=np.int64)
    coords = tuple(centres.T)
    values: dict[str, np.ndarray] = {}
    for module, class_name, prefix in ((firstorder, "RadiomicsFirstOrder", "firstorder"),
                                       (glcm, "RadiomicsGLCM", "glcm"), (glrlm, "RadiomicsGLRLM", "glrlm")):
        extractor = getattr(module, class_name)(image, mask, **settings)
        extractor.labelledVoxelCoordinates = centres.T.copy()
        extractor.enableAllFeatures()
        result = extractor.execute()
        for name, feature_image in result.items():
            values[f"{prefix}_{name}"] = sitk.GetArrayFromImage(feature_image)[coords]
    mapped = {spec.id: values[spec.pyradiomics_name].astype(np.float64) for spec in FEATURES
              if spec.pyradiomics_name is not None}
    mapped["intensity_kurtosis"] = mapped["intensity_kurtosis"] - 3.0
    return mapped
