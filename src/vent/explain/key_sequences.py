"""Which radiomic sequences are "key": a stated rule over the importance histogram (the study's Fig. 12).

The study picks its key sequences from a histogram of sequence importance scores without stating how. Here the rule
is named in the config (``report.key_sequences``) and each rule is a pure function of the importance vector. Every
rule works on the ranked sequences only: a NaN importance (no fold selected the sequence) is not ranked, and an
importance <= 0 (no relevance) is ranked but never picked. With I_(1) >= I_(2) >= ... >= I_(M) the M positive
importances sorted in descending order (ties in sequence order), n_ranked the finite importances and

    max_count = max(min_count, floor(max_share * n_ranked)),

the rules keep the k largest, k chosen as follows, and draw a threshold between I_(k) and I_(k+1):

    largest_gap    k = argmax_{min_count <= k <= min(max_count, M - 1)} [log I_(k) - log I_(k+1)]
                   (the natural break on a ratio scale: importance is a share relative to uniform; the smallest k on
                   a tie); threshold = sqrt(I_(k) I_(k+1)). If no such cut exists (M <= min_count), all M
                   positive ones are kept.
    above_uniform  k = min(#{n: I_n > 1}, max_count): more than a uniform share; threshold = 1.
    top_k          k = min(top_k, M); threshold = sqrt(I_(k) I_(k+1)) (midway on the ratio scale).

Where no positive importance lies below the cut, the threshold is drawn at I_(k) / 2. The defaults live in
``vent.config.KeySequenceConfig``; ``pick_key_sequences(importance, **config.report.key_sequences.model_dump())``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vent.errors import ConfigError, DataError

__all__ = ["DEFAULT_RULE", "KEY_SEQUENCE_RULES", "KeySequences", "pick_key_sequences"]


@dataclass(frozen=True)
class KeySequences:
    """The key sequences a rule picked.

    Attributes:
        rule: The rule's name (a key of ``KEY_SEQUENCE_RULES``).
        threshold: Importance at which the rule's line is drawn (NaN if nothing is positive).
        picked: Indices into the importance vector, by descending importance (ties in index order).
        description: One sentence for a figure caption stating the rule with its numbers.
    """

    rule: str
    threshold: float
    picked: tuple[int, ...]
    description: str


@dataclass(frozen=True)
class _Ranking:
    """The importance vector as every rule sees it (module docstring)."""

    order: np.ndarray  # indices of the M positive importances, descending, ties in index order
    values: np.ndarray  # their importances
    n_ranked: int  # finite importances
    top_k: int
    min_count: int
    max_count: int


def _g(value: float) -> str:
    return f"{value:.3g}"


def _cut_threshold(values: np.ndarray, k: int) -> float:
    """sqrt(I_(k) I_(k+1)) if a positive value follows the cut, else I_(k) / 2."""
    return float(np.sqrt(values[k - 1] * values[k])) if k < len(values) else float(values[k - 1] / 2)


def _largest_gap(ranking: _Ranking) -> tuple[int, float, str]:
    values, lo, hi = ranking.values, ranking.min_count, ranking.max_count
    last = min(hi, len(values) - 1)
    of = f"of {ranking.n_ranked} ranked sequences"
    if last < lo:  # M <= min_count <= max_count: every positive one is kept
        k = len(values)
        return k, _cut_threshold(values, k), (
            f"Key sequences: all {k} {of} with positive importance (no cut between positive importances keeps at "
            f"least {lo}); threshold {_g(values[k - 1] / 2)}, half the smallest."
        )
    gaps = np.log(values[lo - 1 : last]) - np.log(values[lo : last + 1])
    k = lo + int(np.argmax(gaps))
    threshold = _cut_threshold(values, k)
    cut = f"{_g(values[k - 1])} to {_g(values[k])}"
    if gaps.max() == 0:
        how = f"no gap ({cut}: the importances tie), so the first {k} in sequence order are kept"
    else:
        how = f"{cut}, a ratio of {values[k - 1] / values[k]:.3g}"
    return k, threshold, (
        f"Key sequences: the {k} most important {of}, cut at the largest ratio gap between consecutive sorted "
        f"importances among cuts keeping {lo} to {last} ({how}); threshold {_g(threshold)}, their geometric mean."
    )


def _above_uniform(ranking: _Ranking) -> tuple[int, float, str]:
    above = int((ranking.values > 1.0).sum())
    k = min(above, ranking.max_count)
    cap = f", capped at the {k} largest" if above > k else ""
    return k, 1.0, (
        f"Key sequences: the {k} of {ranking.n_ranked} ranked sequences with importance above 1 (more than a "
        f"uniform share; {above} above){cap}; threshold 1."
    )


def _top_k(ranking: _Ranking) -> tuple[int, float, str]:
    values = ranking.values
    k = min(ranking.top_k, len(values))
    threshold = _cut_threshold(values, k)
    below = f"the next ({_g(values[k])})" if k < len(values) else "half of it (no positive importance below)"
    return k, threshold, (
        f"Key sequences: the {k} largest importances of {ranking.n_ranked} ranked sequences (top_k = "
        f"{ranking.top_k}); threshold {_g(threshold)}, between the smallest kept ({_g(values[k - 1])}) and {below}."
    )


KEY_SEQUENCE_RULES: dict[str, Callable[[_Ranking], tuple[int, float, str]]] = {
    "largest_gap": _largest_gap,
    "above_uniform": _above_uniform,
    "top_k": _top_k,
}
"""The registry: one entry per rule (its name is the value of ``report.key_sequences.rule``); each maps the ranking
to (k kept, threshold drawn, caption sentence)."""

DEFAULT_RULE = "largest_gap"


def pick_key_sequences(
    importance: np.ndarray,
    *,
    rule: str = DEFAULT_RULE,
    top_k: int = 5,
    min_count: int = 1,
    max_share: float = 0.5,
) -> KeySequences:
    """Pick the key sequences from their importance with a named rule (formulas in the module docstring).

    Args:
        importance: Importance of each sequence, shape (N,) (1.0 = a uniform share; NaN = not ranked).
        rule: A key of ``KEY_SEQUENCE_RULES``.
        top_k: Sequences kept by "top_k" (>= 1).
        min_count: Fewest sequences "largest_gap" keeps while positive ones remain (>= 1).
        max_share: Most sequences "largest_gap" and "above_uniform" keep, as a share of the ranked ones (at least
            ``min_count``), in (0, 1].

    Returns:
        The rule, the threshold drawn, the picked indices (descending importance) and a caption sentence.

    Raises:
        ConfigError: An unknown rule or a parameter out of range (named by its ``report.key_sequences`` key).
        DataError: ``importance`` is not one-dimensional.
    """
    key = "report.key_sequences"
    if rule not in KEY_SEQUENCE_RULES:
        choices = ", ".join(map(repr, KEY_SEQUENCE_RULES))
        raise ConfigError(f"{key}.rule = {rule!r} is not valid; choose one of {choices}.")
    for name, value in (("top_k", top_k), ("min_count", min_count)):
        if value < 1:
            raise ConfigError(f"{key}.{name} must be >= 1; got {value}.")
    if not 0.0 < max_share <= 1.0:
        raise ConfigError(f"{key}.max_share must be in (0, 1]; got {max_share}.")
    importance = np.asarray(importance, dtype=np.float64)
    if importance.ndim != 1:
        raise DataError(f"importance must have shape (N,); got {importance.shape}.")
    finite = np.isfinite(importance)
    positive = np.flatnonzero(finite & (importance > 0))
    order = positive[np.argsort(-importance[positive], kind="stable")]
    n_ranked = int(finite.sum())
    if len(order) == 0:
        return KeySequences(rule, float("nan"), (), f"No key sequences: none of {n_ranked} ranked sequences has "
                            "positive importance.")
    ranking = _Ranking(order, importance[order], n_ranked, top_k, min_count,
                       max(min_count, int(np.floor(max_share * n_ranked + 1e-9))))
    k, threshold, description = KEY_SEQUENCE_RULES[rule](ranking)
    return KeySequences(rule, threshold, tuple(int(i) for i in order[:k]), description)
