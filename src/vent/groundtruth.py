"""Ground-truth ventilation defects from a reference ventilation image (RefVI), study section 4.1.

1. Outlier removal: inside the lung, repeatedly compute the mean m and SD s of the voxels still kept and keep only
   those in [m - k s, m + k s] (k = 4), until the upper threshold m + k s moves by less than ``tolerance`` (1%)
   relative to the previous iteration. Values outside the final band are clipped to it (hot spots stop dominating).
2. Defect = "the region with the lowest 30% of the total intensity", in one of two readings:
   - ``volume``: the fraction f of lung voxels with the lowest clipped values (threshold = f-quantile);
   - ``cumulative``: the lowest-valued voxels whose clipped values together hold a fraction f of the clipped total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vent.errors import DataError

__all__ = [
    "OutlierClip",
    "iterative_outlier_clip",
    "defect_threshold",
    "derive_defects",
    "DefectResult",
    "call_low_ventilation",
]


@dataclass(frozen=True)
class OutlierClip:
    """Result of the iterative clipping: the final band and how it was reached."""

    lower: float
    upper: float
    iterations: int
    n_outliers: int
    converged: bool = True


def iterative_outlier_clip(
    values: np.ndarray, n_sd: float = 4.0, tolerance: float = 0.01, max_iterations: int = 100
) -> OutlierClip:
    """Iterative mean +/- n_sd * SD outlier band.

    Iterate: m_i, s_i = mean and SD of {v : lower_{i-1} <= v <= upper_{i-1}}; lower_i = m_i - n_sd s_i,
    upper_i = m_i + n_sd s_i; stop when |upper_i - upper_{i-1}| < tolerance * |upper_{i-1}|.

    Args:
        values: 1D array of RefVI values inside the lung.
        n_sd: band half-width in SDs (study: 4).
        tolerance: relative change of the upper threshold that ends the iteration (study: 1%).
        max_iterations: safety bound; stopping there is reported (``converged`` False), never hidden.
    """
    values = np.asarray(values, dtype=np.float64)
    lower, upper = -np.inf, np.inf
    iterations = 0
    converged = False
    for iterations in range(1, max_iterations + 1):
        kept = values[(values >= lower) & (values <= upper)]
        mean, sd = float(kept.mean()), float(kept.std())
        new_lower, new_upper = mean - n_sd * sd, mean + n_sd * sd
        converged = bool(np.isfinite(upper) and abs(new_upper - upper) < tolerance * max(abs(upper), 1e-12))
        lower, upper = new_lower, new_upper
        if converged or sd == 0.0:
            converged = True
            break
    n_outliers = int(((values < lower) | (values > upper)).sum())
    return OutlierClip(lower=lower, upper=upper, iterations=iterations, n_outliers=n_outliers, converged=converged)


def defect_threshold(clipped: np.ndarray, fraction: float, method: str) -> float:
    """The value below which (inclusive) a voxel is a defect.

    - volume: the ``fraction`` quantile of the values (linear interpolation);
    - cumulative: the largest value v such that sum of values <= v is at most ``fraction`` x total, after shifting
      values to be non-negative (ventilation is a non-negative quantity; a negative RefVI offset would otherwise
      make the cumulative share meaningless).
    """
    if method == "volume":
        return float(np.quantile(clipped, fraction))
    if method == "cumulative":
        ordered = np.sort(clipped - min(0.0, float(clipped.min())))
        cumulative = np.cumsum(ordered)
        total = cumulative[-1]
        if total <= 0:
            return float(np.sort(clipped)[0])
        count = int(np.searchsorted(cumulative, fraction * total, side="right"))
        count = max(count, 1)
        return float(np.sort(clipped)[count - 1])
    raise ValueError(f"unknown defect method {method!r}; use 'volume' or 'cumulative'")


@dataclass(frozen=True)
class DefectResult:
    defect_zyx: np.ndarray  # uint8, 1 = defect, only inside the mask
    threshold: float
    clip: OutlierClip
    defect_fraction: float  # share of mask voxels labelled defect


def derive_defects(
    refvi_zyx: np.ndarray,
    mask_zyx: np.ndarray,
    *,
    fraction: float = 0.3,
    method: str = "volume",
    n_sd: float = 4.0,
    tolerance: float = 0.01,
    max_iterations: int = 100,
    median_filter: bool = False,
    case_id: str = "",
) -> DefectResult:
    """Ground-truth defect mask from a RefVI already on the analysis grid.

    Args:
        refvi_zyx: reference ventilation (z, y, x), any units.
        mask_zyx: analysed lung voxels (z, y, x), non-zero = lung.
        fraction: defect fraction (study: 0.3).
        method: "volume" or "cumulative" (see module docstring).
        median_filter: apply a 3x3x3 median filter to the RefVI first (lung-only values are not isolated: the
            filter sees the whole image, as the usual practice does).
    Raises:
        DataError: empty mask, or a RefVI that is constant inside the lung.
    """
    mask = np.asarray(mask_zyx) > 0
    if not mask.any():
        raise DataError(f"{case_id}: the analysis mask is empty; cannot derive ground-truth defects")
    refvi = np.asarray(refvi_zyx, dtype=np.float64)
    if median_filter:
        refvi = ndimage.median_filter(refvi, size=3, mode="nearest")
    values = refvi[mask]
    if not np.isfinite(values).all():
        raise DataError(f"{case_id}: the RefVI holds NaN or infinite values inside the lung")
    if np.ptp(values) == 0:
        raise DataError(f"{case_id}: the RefVI is constant inside the lung; it cannot define defects")
    clip = iterative_outlier_clip(values, n_sd=n_sd, tolerance=tolerance, max_iterations=max_iterations)
    clipped = np.clip(values, clip.lower, clip.upper)
    threshold = defect_threshold(clipped, fraction, method)
    defect = np.zeros(mask.shape, dtype=np.uint8)
    defect[mask] = (clipped <= threshold).astype(np.uint8)
    return DefectResult(defect_zyx=defect, threshold=threshold, clip=clip, defect_fraction=float(defect[mask].mean()))


def call_low_ventilation(
    ventilation: np.ndarray, *, fraction: float, method: str, n_sd: float = 4.0, tolerance: float = 0.01,
    max_iterations: int = 100,
) -> tuple[np.ndarray, float]:
    """The binary defect call of a continuous ventilation estimate by the ground truth's own definition.

    The estimate (one value per analysed lung voxel, high = ventilated: a CT-ventilation map, a regressed RefVI) is
    clipped and thresholded exactly as :func:`derive_defects` treats the RefVI, so the prediction calls the same
    share of the lung as the ground truth. For the AUC and the prediction contract it becomes a defect score in
    [0, 1] that falls with ventilation:

        score_i = 1 - (rank_min(v_i) - 1) / (n - 1),   defect_i  <=>  score_i >= threshold,

    with ties sharing a score. Since the defect set is the voxels with the lowest values, ``threshold`` is the lowest
    score among them (taken on the stored float32 values, so a file read back calls the same voxels).

    Returns:
        (score float32 (n,), threshold).
    """
    from scipy import stats

    values = np.asarray(ventilation, dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError("the ventilation estimate holds NaN or infinite values inside the lung")
    n = len(values)
    if n < 2 or np.ptp(values) == 0:
        return np.ones(n, dtype=np.float32), 0.0
    clip = iterative_outlier_clip(values, n_sd=n_sd, tolerance=tolerance, max_iterations=max_iterations)
    clipped = np.clip(values, clip.lower, clip.upper)
    defect = clipped <= defect_threshold(clipped, fraction, method)
    score = (1.0 - (stats.rankdata(values, method="min") - 1) / (n - 1)).astype(np.float32)
    return score, float(score[defect].min())
