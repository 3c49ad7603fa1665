"""Per-patient classification metrics, cohort summaries and the paired Wilcoxon test of the study.

The study reports, per patient on held-out voxels, Dice of the thresholded prediction against the ground-truth
defect mask, AUC-ROC of the probabilities, sensitivity and accuracy; then mean and (min-max) over patients, and a
two-sided Wilcoxon signed-rank test over patients of each model against the proposed one at significance 0.01.

Binary threshold: a fixed 0.5 under-calls when defects are 30% of the lung, so :func:`choose_threshold` picks each
fold's threshold on that fold's validation patients only (defect-fraction matching or best validation Dice).

Conventions: labels are 0/1 (1 = ventilation defect); a prediction is positive when score >= threshold. A metric
whose denominator is zero (e.g. sensitivity of a patient without defect voxels) is NaN, never a silent 0 or 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from vent.errors import DataError

logger = logging.getLogger(__name__)

METRIC_NAMES = ("dice", "auc", "sensitivity", "accuracy")
VAMPIRE_METRIC_NAMES = ("r_s", "dsc_low", "dsc_high")
"""The VAMPIRE challenge's metrics of a continuous ventilation estimate (Kipritidis et al. 2019)."""


def _as_binary(values: np.ndarray | Sequence, name: str) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    if array.dtype == bool:
        return array
    if array.size and not np.isin(array, (0, 1)).all():
        raise DataError(f"{name} must hold only 0/1 (or bool) values; found {np.unique(array)[:5].tolist()}...")
    return array.astype(bool)


def _check_pair(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise DataError(f"{names[0]} and {names[1]} must have the same number of voxels; got {a.size} and {b.size}")


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, int, int, int]:
    """Return (TP, FP, FN, TN) of binary predictions.

    Args:
        y_true: (n,) 0/1 ground truth.
        y_pred: (n,) 0/1 prediction.
    """
    truth = _as_binary(y_true, "y_true")
    prediction = _as_binary(y_pred, "y_pred")
    _check_pair(truth, prediction, ("y_true", "y_pred"))
    tp = int(np.count_nonzero(truth & prediction))
    fp = int(np.count_nonzero(~truth & prediction))
    fn = int(np.count_nonzero(truth & ~prediction))
    return tp, fp, fn, truth.size - tp - fp - fn


def dice(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Dice similarity coefficient of two binary masks (Dice 1945; equal to the F1 score).

    DSC = 2 |A n B| / (|A| + |B|) = 2 TP / (2 TP + FP + FN).

    Args:
        y_true: (n,) 0/1 ground-truth defect mask.
        y_pred: (n,) 0/1 predicted defect mask.

    Returns:
        DSC in [0, 1]; NaN when both masks are empty.
    """
    tp, fp, fn, _ = confusion_counts(y_true, y_pred)
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else math.nan


def sensitivity(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Sensitivity (recall, true-positive rate) = TP / (TP + FN).

    Args:
        y_true: (n,) 0/1 ground truth.
        y_pred: (n,) 0/1 prediction.

    Returns:
        Sensitivity in [0, 1]; NaN when there are no positive voxels.
    """
    tp, _, fn, _ = confusion_counts(y_true, y_pred)
    return tp / (tp + fn) if tp + fn else math.nan



def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy = (TP + TN) / n; NaN for empty input.

    Args:
        y_true: (n,) 0/1 ground truth.
        y_pred: (n,) 0/1 prediction.
    """
    tp, fp, fn, tn = confusion_counts(y_true, y_pred)
    n = tp + fp + fn + tn
    return (tp + tn) / n if n else math.nan


def _scores(y_score: np.ndarray | Sequence) -> np.ndarray:
    score = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if not np.isfinite(score).all():
        raise DataError("y_score contains NaN or infinite values; check the model predictions")
    return score


def auc_roc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (Hanley & McNeil 1982).

    AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), R_pos the sum of the (tie-averaged) ranks of the positive
    voxels' scores among all scores. Equals the trapezoidal area under the empirical ROC curve, ties included.

    Args:
        y_true: (n,) 0/1 ground truth.
        y_score: (n,) scores or probabilities (higher = more likely defect).

    Returns:
        AUC in [0, 1]; NaN when only one class is present.
    """
    truth = _as_binary(y_true, "y_true")
    score = _scores(y_score)
    _check_pair(truth, score, ("y_true", "y_score"))
    n_positive = int(truth.sum())
    n_negative = truth.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return math.nan
    ranks = stats.rankdata(score)
    rank_sum = float(ranks[truth].sum())
    return (rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)


def patient_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The study's four metrics for one patient's held-out voxels.

    Args:
        y_true: (n,) 0/1 ground-truth defect labels.
        y_score: (n,) defect probabilities in [0, 1].
        threshold: A voxel is predicted defect when its probability >= threshold.

    Returns:
        ``{"dice", "auc", "sensitivity", "accuracy"}`` as floats (NaN where undefined).
    """
    score = _scores(y_score)
    prediction = score >= threshold
    return {
        "dice": dice(y_true, prediction),
        "auc": auc_roc(y_true, score),
        "sensitivity": sensitivity(y_true, prediction),
        "accuracy": accuracy(y_true, prediction),
    }


THRESHOLD_RULES = ("val_defect_fraction", "val_dice")
DICE_GRID = tuple(round(0.01 * k, 2) for k in range(1, 100))  # 0.01, 0.02, ..., 0.99


@dataclass(frozen=True)
class ThresholdChoice:
    """A binary threshold and how it was chosen.

    Attributes:
        threshold: A voxel is predicted defect when its probability >= threshold.
        rule: ``"fixed"``, ``"val_defect_fraction"`` or ``"val_dice"``.
        figures: Validation figures at that threshold: n_patients, n_voxels, true_defect_fraction,
            predicted_defect_fraction, mean_dice (mean per-patient Dice, NaN patients left out).
    """

    threshold: float
    rule: str
    figures: dict[str, float]


def _validation_arrays(
    labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(labels) != len(scores) or not labels:
        raise DataError(
            f"choosing a threshold needs one label and one score array per validation patient; got {len(labels)} "
            f"and {len(scores)}"
        )
    truths = [_as_binary(t, "y_true") for t in labels]
    values = [_scores(s) for s in scores]
    for truth, value in zip(truths, values):
        _check_pair(truth, value, ("y_true", "y_score"))
    return truths, values


def defect_fraction_threshold(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> float:
    """The threshold whose predicted defect fraction on the pooled validation voxels equals the true one.

    With f = (1/n) sum_i y_i the ground-truth defect fraction of the n pooled validation voxels and k = round(f n),
    the threshold is the k-th largest score s_(k), so #{i : s_i >= t} = k (more only when scores tie at t).

    Args:
        labels: Per validation patient, (n_p,) 0/1 ground truth.
        scores: Per validation patient, (n_p,) defect probabilities, same order.

    Returns:
        The threshold t.

    Raises:
        DataError: Mismatched arrays, or validation voxels of one class only (f = 0 or f = 1 makes t undefined).
    """
    truths, values = _validation_arrays(labels, scores)
    truth, score = np.concatenate(truths), np.concatenate(values)
    k = round(float(truth.mean()) * truth.size) if truth.size else 0
    if not 0 < k < truth.size:
        raise DataError(
            f"the validation patients have {k} defect voxels of {truth.size}; 'val_defect_fraction' needs both "
            "classes; set train.threshold to a number or to 'val_dice'"
        )
    return float(np.sort(score)[::-1][k - 1])


def dice_curve(truth: np.ndarray, score: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """Dice of ``score >= t`` against ``truth`` for every t of ``grid`` (NaN where both masks are empty).

    DSC(t) = 2 TP(t) / (#{s >= t} + #{y = 1}), counted with binary searches in the sorted scores.
    """
    grid_array = np.asarray(grid, dtype=np.float64)
    n_pred = score.size - np.searchsorted(np.sort(score), grid_array, side="left")
    positives = np.sort(score[truth])
    tp = positives.size - np.searchsorted(positives, grid_array, side="left")
    denominator = (n_pred + positives.size).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2.0 * tp / denominator, np.nan)


def best_dice_threshold(
    labels: Sequence[np.ndarray], scores: Sequence[np.ndarray], grid: Sequence[float] = DICE_GRID
) -> float:
    """The grid threshold maximising the mean per-patient Dice of the validation patients.

    t* = argmax_{t in grid} (1/P) sum_p DSC_p(t), patients with an undefined Dice left out; ties go to the smallest t.
    The default grid is 0.01, 0.02, ..., 0.99.

    Args:
        labels: Per validation patient, (n_p,) 0/1 ground truth.
        scores: Per validation patient, (n_p,) defect probabilities, same order.
        grid: Candidate thresholds.

    Raises:
        DataError: Mismatched arrays, an empty grid, or Dice undefined for every patient at every threshold.
    """
    truths, values = _validation_arrays(labels, scores)
    if len(grid) == 0:
        raise DataError("the threshold grid is empty")
    curves = np.array([dice_curve(t, s, grid) for t, s in zip(truths, values)])
    if np.isnan(curves).all():
        raise DataError("Dice is undefined on every validation patient (no defect and no predicted defect voxels)")
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(np.where(np.isnan(curves).all(axis=0), -np.inf, curves), axis=0)
    return float(np.asarray(grid, dtype=np.float64)[int(np.argmax(mean))])


def choose_threshold(
    rule: float | str,
    val_labels: Sequence[np.ndarray],
    val_scores: Sequence[np.ndarray],
    grid: Sequence[float] = DICE_GRID,
) -> ThresholdChoice:
    """Choose a fold's binary threshold from its VALIDATION patients only (never its test patients).

    Rules: a number (fixed, used as is); ``"val_defect_fraction"`` (:func:`defect_fraction_threshold`: the predicted
    defect fraction on the validation voxels equals their ground-truth fraction); ``"val_dice"``
    (:func:`best_dice_threshold`: best mean per-patient validation Dice over ``grid``).

    Args:
        rule: The rule or a fixed threshold in (0, 1).
        val_labels: Per validation patient, (n_p,) 0/1 ground truth.
        val_scores: Per validation patient, (n_p,) defect probabilities.
        grid: Candidates for ``"val_dice"``.

    Returns:
        The :class:`ThresholdChoice`, with the validation figures at the chosen threshold.

    Raises:
        DataError: See the rule functions. ValueError: an unknown rule.
    """
    if isinstance(rule, str):
        if rule == "val_defect_fraction":
            threshold = defect_fraction_threshold(val_labels, val_scores)
        elif rule == "val_dice":
            threshold = best_dice_threshold(val_labels, val_scores, grid)
        else:
            raise ValueError(f"unknown threshold rule {rule!r}; use a number or one of {THRESHOLD_RULES}")
    else:
        threshold = float(rule)
    truths, values = _validation_arrays(val_labels, val_scores)
    dices = [dice(t, s >= threshold) for t, s in zip(truths, values)]
    truth, score = np.concatenate(truths), np.concatenate(values)
    figures = {
        "n_patients": len(truths),
        "n_voxels": int(truth.size),
        "true_defect_fraction": float(truth.mean()) if truth.size else math.nan,
        "predicted_defect_fraction": float((score >= threshold).mean()) if score.size else math.nan,
        "mean_dice": float(np.nanmean(dices)) if not np.isnan(dices).all() else math.nan,
    }
    return ThresholdChoice(threshold=threshold, rule="fixed" if not isinstance(rule, str) else rule, figures=figures)


def function_regions(values: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) function regions of a ventilation map by volume: the voxels at or below its ``fraction``
    quantile, and those at or above its ``1 - fraction`` quantile (linear interpolation)."""
    values = np.asarray(values, dtype=np.float64)
    return values <= np.quantile(values, fraction), values >= np.quantile(values, 1.0 - fraction)


def vampire_metrics(estimate: np.ndarray, refvi: np.ndarray, fraction: float) -> dict[str, float]:
    """The VAMPIRE challenge's agreement of a continuous ventilation estimate with the RefVI over the lung voxels.

    - r_s: Spearman's rank correlation (Pearson correlation of the tie-averaged ranks; ``scipy.stats.spearmanr``),
      NaN when either map is constant;
    - DSC_low: Dice of the low-function regions (lowest ``fraction`` by volume) of the two maps;
    - DSC_high: Dice of the high-function regions (highest ``fraction`` by volume).

    Args:
        estimate: (n,) the method's ventilation estimate, high = ventilated.
        refvi: (n,) the reference ventilation at the same voxels.
        fraction: Share of the lung in each region (the challenge and the study: 0.30).
    """
    estimate = _scores(estimate)
    reference = _scores(refvi)
    _check_pair(estimate, reference, ("estimate", "refvi"))
    if estimate.size < 2 or np.ptp(estimate) == 0 or np.ptp(reference) == 0:
        r_s = math.nan
    else:
        r_s = float(stats.spearmanr(estimate, reference).statistic)
    low_est, high_est = function_regions(estimate, fraction)
    low_ref, high_ref = function_regions(reference, fraction)
    return {"r_s": r_s, "dsc_low": dice(low_ref, low_est), "dsc_high": dice(high_ref, high_est)}


class Summary(tuple):
    """(mean, min, max) over patients, ignoring NaN; unpacks as a 3-tuple.

    Attributes:
        mean, lo, hi: The summary values (NaN if every value is NaN).
        n: Number of values given.
        n_nan: Number of NaN values left out.
    """

    def __new__(cls, mean: float, lo: float, hi: float, n: int, n_nan: int) -> Summary:
        summary = super().__new__(cls, (mean, lo, hi))
        summary.mean, summary.lo, summary.hi, summary.n, summary.n_nan = mean, lo, hi, n, n_nan
        return summary

    def __repr__(self) -> str:
        return f"Summary(mean={self.mean}, lo={self.lo}, hi={self.hi}, n={self.n}, n_nan={self.n_nan})"


def summarise(values: Iterable[float] | Mapping[str, float]) -> Summary:
    """Mean and range of per-patient values, ignoring NaN (and logging how many were NaN).

    Args:
        values: Per-patient values, or a mapping case id -> value.

    Returns:
        :class:`Summary` (mean, min, max) with ``n`` and ``n_nan``.
    """
    if isinstance(values, Mapping):
        values = values.values()
    array = np.asarray(list(values), dtype=np.float64)
    finite = array[~np.isnan(array)]
    n_nan = int(array.size - finite.size)
    if n_nan:
        logger.warning("%d of %d values are NaN and were left out of the summary", n_nan, array.size)
    if finite.size == 0:
        return Summary(math.nan, math.nan, math.nan, int(array.size), n_nan)
    return Summary(float(finite.mean()), float(finite.min()), float(finite.max()), int(array.size), n_nan)


def wilcoxon_vs_reference(reference: Mapping[str, float], other: Mapping[str, float]) -> float:
    """Two-sided Wilcoxon signed-rank test (Wilcoxon 1945) of ``other`` against ``reference``, paired by case.

    Differences d_i = other_i - reference_i; zero differences are dropped (``zero_method="wilcox"``); scipy picks the
    exact null distribution for small samples without ties, else the normal approximation.

    Args:
        reference: case id -> metric of the proposed model.
        other: case id -> metric of the compared model (same cases).

    Returns:
        The p-value; 1.0 when every difference is zero; NaN when fewer than 2 cases have values for both.

    Raises:
        DataError: The two mappings cover different cases.
    """
    if set(reference) != set(other):
        missing = sorted(set(reference) ^ set(other))
        raise DataError(f"Wilcoxon test needs the same cases for both models; these appear in only one: {missing}")
    cases = sorted(reference)
    pairs = np.array([(reference[c], other[c]) for c in cases], dtype=np.float64).reshape(-1, 2)
    valid = ~np.isnan(pairs).any(axis=1)
    if (~valid).any():
        logger.warning("Wilcoxon test: %d case(s) with NaN left out", int((~valid).sum()))
    pairs = pairs[valid]
    if pairs.shape[0] < 2:
        return math.nan
    differences = pairs[:, 1] - pairs[:, 0]
    if np.all(differences == 0):
        return 1.0
    return float(stats.wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)


def format_cell(mean: float, lo: float, hi: float, p: float | None = None, alpha: float = 0.01, digits: int = 2) -> str:
    """Format a table cell as in the study's Table 2, e.g. ``"0.78(0.74-0.79)*"``.

    Args:
        mean, lo, hi: Mean and range over patients.
        p: Wilcoxon p-value against the proposed model (``None`` for the proposed model itself).
        alpha: A star marks p < alpha.
        digits: Decimals.

    Returns:
        The cell text; ``"n/a"`` when the mean is NaN.
    """
    if mean is None or math.isnan(mean):
        return "n/a"
    star = "*" if p is not None and not math.isnan(p) and p < alpha else ""
    return f"{mean:.{digits}f}({lo:.{digits}f}-{hi:.{digits}f}){star}"


def pooled_roc(
    y_true_list: Sequence[np.ndarray], y_score_list: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC curve of all patients' voxels pooled together (the study's Fig. 10).

    Thresholds run over the distinct scores from high to low; point k has
    FPR_k = FP_k / n_neg and TPR_k = TP_k / n_pos for the rule score >= threshold_k; the curve starts at (0, 0).
    The AUC is the trapezoidal area under it (equal to the Mann-Whitney AUC).

    Args:
        y_true_list: Per-patient (n_p,) 0/1 labels.
        y_score_list: Per-patient (n_p,) scores, same order.

    Returns:
        (fpr, tpr, auc): float64 arrays of equal length, and the pooled AUC.

    Raises:
        DataError: Lists of different lengths, or only one class over all voxels.
    """
    if len(y_true_list) != len(y_score_list):
        raise DataError(f"pooled_roc got {len(y_true_list)} label arrays but {len(y_score_list)} score arrays")
    truth = np.concatenate([_as_binary(t, "y_true") for t in y_true_list]) if y_true_list else np.zeros(0, bool)
    score = np.concatenate([_scores(s) for s in y_score_list]) if y_score_list else np.zeros(0)
    _check_pair(truth, score, ("y_true", "y_score"))
    n_positive = int(truth.sum())
    n_negative = truth.size - n_positive
    if n_positive == 0 or n_negative == 0:
        raise DataError("pooled_roc needs both defect and healthy voxels over the cohort")
    order = np.argsort(-score, kind="mergesort")
    sorted_score = score[order]
    sorted_truth = truth[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(sorted_score)), sorted_score.size - 1]
    tp = np.cumsum(sorted_truth)[last_of_each_score]
    fp = (last_of_each_score + 1) - tp
    fpr = np.r_[0.0, fp / n_negative]
    tpr = np.r_[0.0, tp / n_positive]
    return fpr, tpr, float(np.trapezoid(tpr, fpr))
