"""Key sequences over the breathing cycle per patient, with a confidence band over patients (the study's Fig. 13).

The sampled voxels of one patient are spatially correlated, so they are not independent observations: a band from
the SD over all voxels divided by sqrt(number of voxels) would be far too narrow. The patient is the unit instead.
For one radiomic sequence in one class (defect or healthy), at each phase t, with patients p = 1..P and the
n_p sampled voxels v of patient p:

    m_p[t]   = (1 / n_p) sum_v x_v[t]                                 patient mean
    mean[t]  = (1 / P) sum_p m_p[t]                                   every patient weighs the same
    s[t]     = sqrt( sum_p (m_p[t] - mean[t])^2 / (P - 1) )           SD of the patient means
    CI[t]    = mean[t] +/- t_{(1 + level) / 2, P - 1} s[t] / sqrt(P)  Student-t interval over patients

(the one-sample t-interval for the mean of the patient means, e.g. Altman et al., "Statistics with Confidence",
2nd ed., 2000, ch. 4). With one patient there is no spread to estimate: the bounds are NaN, not a zero-width band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vent.errors import ConfigError, DataError

__all__ = ["TREND_BAND_DEFINITION", "TrendSummary", "patient_confidence_band", "summarise_trend"]

TREND_BAND_DEFINITION = (
    "Per sequence, class and phase: mean = mean over patients of each patient's mean over its sampled voxels; "
    "ci_low, ci_high = mean -/+ t_{(1+level)/2, P-1} * sd_patients / sqrt(P) (Student-t interval over the P "
    "patients, sd_patients with ddof 1; NaN when P = 1); sd_voxels = SD over all sampled voxels of all patients "
    "pooled (ddof 0; includes the spread between patients)."
)


def patient_confidence_band(
    patient_means: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over patients and its Student-t confidence interval (module docstring).

    Args:
        patient_means: Each patient's mean, shape (P,) or (P, ...) (e.g. (P, T): one band per phase); P >= 1.
            NaN propagates.
        level: Coverage of the interval, in (0, 1).

    Returns:
        (mean, low, high), each of shape ``patient_means.shape[1:]``; low and high are NaN where P = 1.

    >>> mean, low, high = patient_confidence_band(np.array([1.0, 2.0, 3.0]))
    >>> float(mean), round(float(low), 4), round(float(high), 4)
    (2.0, -0.4841, 4.4841)
    """
    from scipy import stats

    if not 0.0 < level < 1.0:
        raise ConfigError(f"confidence level must be in (0, 1); got {level}.")
    patient_means = np.asarray(patient_means, dtype=np.float64)
    if patient_means.ndim == 0 or patient_means.shape[0] < 1:
        raise DataError(f"need the means of at least one patient along axis 0; got shape {patient_means.shape}.")
    n_patients = patient_means.shape[0]
    mean = patient_means.mean(axis=0)
    if n_patients == 1:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan.copy()
    sem = patient_means.std(axis=0, ddof=1) / np.sqrt(n_patients)
    half = stats.t.ppf((1.0 + level) / 2.0, n_patients - 1) * sem
    return mean, mean - half, mean + half


@dataclass
class TrendSummary:
    """One sequence in one class over the T phases: per-patient summaries and the band over patients.

    Attributes:
        cases: The P patients' case ids, sorted.
        case_mean: Mean over each patient's sampled voxels, shape (P, T).
        case_sd: SD over each patient's sampled voxels (ddof 0), shape (P, T).
        case_n: Sampled voxels of each patient, shape (P,).
        mean: Mean over patients of ``case_mean``, shape (T,).
        ci_low: Lower bound of the t-interval over patients, shape (T,); NaN if P = 1.
        ci_high: Upper bound, shape (T,); NaN if P = 1.
        sd_patients: SD of ``case_mean`` over patients (ddof 1), shape (T,); NaN if P = 1.
        sd_voxels: SD over all sampled voxels of all patients pooled (ddof 0), shape (T,).
        n_voxels: Sampled voxels of all patients.
    """

    cases: list[str]
    case_mean: np.ndarray
    case_sd: np.ndarray
    case_n: np.ndarray
    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    sd_patients: np.ndarray
    sd_voxels: np.ndarray
    n_voxels: int


def summarise_trend(values_vt: np.ndarray, cases_v: np.ndarray, level: float = 0.95) -> TrendSummary:
    """Per-patient means and SDs of one sequence's values, and the confidence band over patients.

    Args:
        values_vt: Raw value of the sequence in V sampled voxels of one class, shape (V, T), V >= 1.
        cases_v: Case id of each voxel, shape (V,).
        level: Coverage of the band (``patient_confidence_band``).

    Returns:
        The summary, patients in sorted case-id order.
    """
    values_vt = np.asarray(values_vt, dtype=np.float64)
    cases_v = np.asarray(cases_v).astype(str)
    if values_vt.ndim != 2 or len(values_vt) < 1 or cases_v.shape != (len(values_vt),):
        raise DataError(
            f"need values of shape (V >= 1, T) and one case id per voxel; got {values_vt.shape} and {cases_v.shape}."
        )
    cases, index = np.unique(cases_v, return_inverse=True)
    groups = [values_vt[index == p] for p in range(len(cases))]
    case_mean = np.stack([group.mean(axis=0) for group in groups])
    mean, low, high = patient_confidence_band(case_mean, level)
    return TrendSummary(
        cases=[str(case) for case in cases],
        case_mean=case_mean,
        case_sd=np.stack([group.std(axis=0) for group in groups]),
        case_n=np.array([len(group) for group in groups], dtype=np.int64),
        mean=mean,
        ci_low=low,
        ci_high=high,
        sd_patients=case_mean.std(axis=0, ddof=1) if len(cases) > 1 else np.full(values_vt.shape[1], np.nan),
        sd_voxels=values_vt.std(axis=0),
        n_voxels=len(values_vt),
    )
