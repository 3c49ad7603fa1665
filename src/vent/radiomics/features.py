"""The 56 radiomic features of the study's Table 1: stable ids, IBSI ids and pyradiomics names.

The order of :data:`FEATURES` is the order of Table 1 (numbers 1-56) and the column order of every feature array
returned by :mod:`vent.radiomics`. Ids are stable snake_case strings; name features by id, never by number, in
reports. IBSI ids are the 4-character codes of the IBSI reference manual (Zwanenburg et al., Radiology 2020).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from vent.errors import ConfigError

FeatureFamily = Literal["intensity", "glcm", "glrlm"]


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of the study's Table 1.

    Attributes:
        id: Stable snake_case id, e.g. ``glcm_joint_entropy``.
        ibsi_id: IBSI reference-manual code, e.g. ``TU9B``.
        family: ``intensity`` (raw values in the kernel), ``glcm`` or ``glrlm`` (grey levels, 3D averaged).
        number: Row number (1-56) in the study's Table 1.
        name: Human-readable IBSI name.
        pyradiomics_name: The matching pyradiomics 3.1 feature (``class_Feature``), or None when pyradiomics lacks
            it. ``intensity_kurtosis`` is IBSI excess kurtosis = pyradiomics ``firstorder_Kurtosis`` - 3.
    """

    id: str
    ibsi_id: str
    family: FeatureFamily
    number: int
    name: str
    pyradiomics_name: str | None


_TABLE: tuple[tuple[str, str, str, str | None], ...] = (
    # (id, ibsi_id, name, pyradiomics_name)
    ("intensity_mean", "Q4LE", "Mean", "firstorder_Mean"),
    ("intensity_variance", "ECT3", "Variance", "firstorder_Variance"),
    ("intensity_skewness", "KE2A", "Skewness", "firstorder_Skewness"),
    ("intensity_kurtosis", "IPH6", "(Excess) kurtosis", "firstorder_Kurtosis"),
    ("intensity_median", "Y12H", "Median", "firstorder_Median"),
    ("intensity_minimum", "1GSF", "Minimum", "firstorder_Minimum"),
    ("intensity_p10", "QG58", "10th percentile", "firstorder_10Percentile"),
    ("intensity_p90", "8DWT", "90th percentile", "firstorder_90Percentile"),
    ("intensity_maximum", "84IY", "Maximum", "firstorder_Maximum"),
    ("intensity_interquartile_range", "SALO", "Interquartile range", "firstorder_InterquartileRange"),
    ("intensity_range", "2OJQ", "Range", "firstorder_Range"),
    ("intensity_mean_absolute_deviation", "4FUA", "Mean absolute deviation", "firstorder_MeanAbsoluteDeviation"),
    ("intensity_robust_mean_absolute_deviation", "1128", "Robust mean absolute deviation",
     "firstorder_RobustMeanAbsoluteDeviation"),
    ("intensity_median_absolute_deviation", "N72L", "Median absolute deviation", None),
    ("intensity_coefficient_of_variation", "7TET", "Coefficient of variation", None),
    ("intensity_quartile_coefficient_of_dispersion", "9S40", "Quartile coefficient of dispersion", None),
    ("intensity_energy", "N8CA", "Energy", "firstorder_Energy"),
    ("intensity_root_mean_square", "5ZWQ", "Root mean square", "firstorder_RootMeanSquared"),
    ("glcm_autocorrelation", "QWB0", "Autocorrelation", "glcm_Autocorrelation"),
    ("glcm_cluster_prominence", "AE86", "Cluster prominence", "glcm_ClusterProminence"),
    ("glcm_cluster_shade", "7NFM", "Cluster shade", "glcm_ClusterShade"),
    ("glcm_cluster_tendency", "DG8W", "Cluster tendency", "glcm_ClusterTendency"),
    ("glcm_contrast", "ACUI", "Contrast", "glcm_Contrast"),
    ("glcm_correlation", "NI2N", "Correlation", "glcm_Correlation"),
    ("glcm_difference_entropy", "NTRS", "Difference entropy", "glcm_DifferenceEntropy"),
    ("glcm_dissimilarity", "8S9J", "Dissimilarity (difference average)", "glcm_DifferenceAverage"),
    ("glcm_joint_energy", "8ZQL", "Angular second moment (joint energy)", "glcm_JointEnergy"),
    ("glcm_joint_entropy", "TU9B", "Joint entropy", "glcm_JointEntropy"),
    ("glcm_inverse_difference", "IB1Z", "Inverse difference", "glcm_Id"),
    ("glcm_inverse_difference_moment", "WF0Z", "Inverse difference moment", "glcm_Idm"),
    ("glcm_information_correlation_1", "R8DG", "Information correlation 1", "glcm_Imc1"),
    ("glcm_information_correlation_2", "JN9H", "Information correlation 2", "glcm_Imc2"),
    ("glcm_inverse_difference_moment_normalised", "1QCO", "Normalised inverse difference moment", "glcm_Idmn"),
    ("glcm_inverse_difference_normalised", "NDRX", "Normalised inverse difference", "glcm_Idn"),
    ("glcm_inverse_variance", "E8JP", "Inverse variance", "glcm_InverseVariance"),
    ("glcm_joint_maximum", "GYBY", "Joint maximum", "glcm_MaximumProbability"),
    ("glcm_sum_average", "ZGXS", "Sum average", "glcm_SumAverage"),
    ("glcm_sum_entropy", "P6QZ", "Sum entropy", "glcm_SumEntropy"),
    ("glcm_sum_variance", "OEEB", "Sum variance", "glcm_ClusterTendency"),
    ("glcm_joint_variance", "UR99", "Joint variance", "glcm_SumSquares"),
    ("glrlm_short_run_emphasis", "22OV", "Short runs emphasis", "glrlm_ShortRunEmphasis"),
    ("glrlm_long_run_emphasis", "W4KF", "Long runs emphasis", "glrlm_LongRunEmphasis"),
    ("glrlm_grey_level_non_uniformity", "R5YN", "Grey level non-uniformity", "glrlm_GrayLevelNonUniformity"),
    ("glrlm_grey_level_non_uniformity_normalised", "OVBL", "Normalised grey level non-uniformity",
     "glrlm_GrayLevelNonUniformityNormalized"),
    ("glrlm_run_length_non_uniformity", "W92Y", "Run length non-uniformity", "glrlm_RunLengthNonUniformity"),
    ("glrlm_run_length_non_uniformity_normalised", "IC23", "Normalised run length non-uniformity",
     "glrlm_RunLengthNonUniformityNormalized"),
    ("glrlm_run_percentage", "9ZK5", "Run percentage", "glrlm_RunPercentage"),
    ("glrlm_low_grey_level_run_emphasis", "V3SW", "Low grey level run emphasis", "glrlm_LowGrayLevelRunEmphasis"),
    ("glrlm_high_grey_level_run_emphasis", "G3QZ", "High grey level run emphasis",
     "glrlm_HighGrayLevelRunEmphasis"),
    ("glrlm_short_run_low_grey_level_emphasis", "HTZT", "Short run low grey level emphasis",
     "glrlm_ShortRunLowGrayLevelEmphasis"),
    ("glrlm_short_run_high_grey_level_emphasis", "GD3A", "Short run high grey level emphasis",
     "glrlm_ShortRunHighGrayLevelEmphasis"),
    ("glrlm_long_run_low_grey_level_emphasis", "IVPO", "Long run low grey level emphasis",
     "glrlm_LongRunLowGrayLevelEmphasis"),
    ("glrlm_long_run_high_grey_level_emphasis", "3KUM", "Long run high grey level emphasis",
     "glrlm_LongRunHighGrayLevelEmphasis"),
    ("glrlm_grey_level_variance", "8CE5", "Grey level variance", "glrlm_GrayLevelVariance"),
    ("glrlm_run_length_variance", "SXLW", "Run length variance", "glrlm_RunVariance"),
    ("glrlm_run_entropy", "HJ9O", "Run entropy", "glrlm_RunEntropy"),
)

FEATURES: tuple[FeatureSpec, ...] = tuple(
    FeatureSpec(
        id=fid,
        ibsi_id=ibsi,
        family=fid.split("_", 1)[0],  # type: ignore[arg-type]
        number=number,
        name=name,
        pyradiomics_name=pyrad,
    )
    for number, (fid, ibsi, name, pyrad) in enumerate(_TABLE, start=1)
)
FEATURE_IDS: tuple[str, ...] = tuple(spec.id for spec in FEATURES)
FEATURE_BY_ID: dict[str, FeatureSpec] = {spec.id: spec for spec in FEATURES}


def feature_indices(feature_ids: Sequence[str] | None) -> list[int]:
    """Column indices (into :data:`FEATURES`) of the requested features, in the order requested.

    Args:
        feature_ids: Feature ids, or None for all 56.

    Returns:
        Indices into :data:`FEATURE_IDS`.

    Raises:
        ConfigError: An id is unknown (the message suggests the closest id) or repeated.
    """
    if feature_ids is None:
        return list(range(len(FEATURES)))
    import difflib

    index_of = {fid: k for k, fid in enumerate(FEATURE_IDS)}
    indices: list[int] = []
    for fid in feature_ids:
        if fid not in index_of:
            close = difflib.get_close_matches(fid, FEATURE_IDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"Unknown feature id {fid!r} in 'features'.{hint} Valid ids: vent.radiomics.FEATURE_IDS.")
        if index_of[fid] in indices:
            raise ConfigError(f"Feature id {fid!r} is listed twice in 'features'; list each feature once.")
        indices.append(index_of[fid])
    return indices

