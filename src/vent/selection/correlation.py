"""Streaming, exact Pearson correlation between feature maps, one matrix per breathing phase.

The study (its section 4.5) correlates every pair of feature maps at each phase over the voxels pooled across
patients, then averages the per-phase matrices. A cohort does not fit in memory, so the sums are accumulated chunk by
chunk with the pairwise update of Chan, Golub & LeVeque (1979), which merges the centred statistics of two sets
exactly and without the cancellation of the naive ``sum(x*y) - n*mean(x)*mean(y)`` formula.
"""

from __future__ import annotations

import logging

import numpy as np

from vent.errors import DataError

logger = logging.getLogger(__name__)

# A feature whose standard deviation is below this fraction of its magnitude is treated as constant: centred float64
# sums of identical float32 values leave only rounding residue of that order.
_RELATIVE_STD_TOLERANCE = 1e-9


def merge_centred_moments(
    count_a: int,
    mean_a: np.ndarray,
    comoment_a: np.ndarray,
    count_b: int,
    mean_b: np.ndarray,
    comoment_b: np.ndarray,
) -> tuple[int, np.ndarray, np.ndarray]:
    """Merge the centred first and second moments of two disjoint sets of samples.

    With n = n_a + n_b and delta = mean_b - mean_a (Chan, Golub & LeVeque 1979):

        mean = mean_a + delta * n_b / n
        C    = C_a + C_b + outer(delta, delta) * n_a * n_b / n

    where C is the co-moment matrix sum_i (x_i - mean)(x_i - mean)^T. The update is exact in exact arithmetic and
    numerically stable because it never subtracts two large uncentred sums.

    Args:
        count_a: Number of samples in set a (>= 0).
        mean_a: Mean of set a, shape (..., F).
        comoment_a: Co-moment matrix of set a, shape (..., F, F).
        count_b: Number of samples in set b (>= 0).
        mean_b: Mean of set b, shape (..., F).
        comoment_b: Co-moment matrix of set b, shape (..., F, F).

    Returns:
        (n, mean, C) of the union, shapes as the inputs.
    """
    count = count_a + count_b
    if count_a == 0:
        return count_b, mean_b.copy(), comoment_b.copy()
    if count_b == 0:
        return count_a, mean_a.copy(), comoment_a.copy()
    delta = mean_b - mean_a
    mean = mean_a + delta * (count_b / count)
    comoment = comoment_a + comoment_b + delta[..., :, None] * delta[..., None, :] * (count_a * count_b / count)
    return count, mean, comoment


def correlation_from_comoment(comoment_ff: np.ndarray, constant_f: np.ndarray) -> np.ndarray:
    """Pearson correlation matrix from a co-moment matrix, with constant features handled explicitly.

    r_ij = C_ij / sqrt(C_ii * C_jj). A constant feature has no defined correlation; instead of NaN its row and column
    are set to 0 and its diagonal entry to 1, so it behaves as a feature uncorrelated with every other one. The
    caller reports such features (see ``PhaseCorrelation.constant_features``).

    Args:
        comoment_ff: Co-moment matrix, shape (..., F, F).
        constant_f: True for constant features, shape (..., F).

    Returns:
        Correlation matrix, shape (..., F, F), values in [-1, 1], diagonal 1.
    """
    variance = np.diagonal(comoment_ff, axis1=-2, axis2=-1).copy()
    variance[constant_f] = 1.0
    scale = 1.0 / np.sqrt(variance)
    corr = comoment_ff * scale[..., :, None] * scale[..., None, :]
    corr[np.broadcast_to(constant_f[..., :, None], corr.shape)] = 0.0
    corr[np.broadcast_to(constant_f[..., None, :], corr.shape)] = 0.0
    n_features = corr.shape[-1]
    diagonal = np.arange(n_features)
    corr[..., diagonal, diagonal] = 1.0
    return np.clip(corr, -1.0, 1.0)


class PhaseCorrelation:
    """Exact Pearson correlation between F features at each of T phases, accumulated over chunks of voxels.

    Feed (n, T, F) chunks with ``update``; combine accumulators of different patients with ``merge``. Statistics are
    kept in float64 as (count, mean (T, F), co-moment (T, F, F)).

    Example:
        >>> import numpy as np
        >>> acc = PhaseCorrelation()
        >>> acc.update(np.random.default_rng(0).normal(size=(100, 2, 3)))
        >>> acc.per_phase().shape, acc.averaged().shape
        ((2, 3, 3), (3, 3))
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean_tf: np.ndarray | None = None
        self.comoment_tff: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int] | None:
        """(T, F) of the data seen so far, or None before the first update."""
        return None if self.mean_tf is None else self.mean_tf.shape  # type: ignore[return-value]

    def _check_shape(self, shape: tuple[int, int], what: str) -> None:
        if self.shape is not None and tuple(shape) != self.shape:
            raise DataError(
                f"{what} has {shape[0]} phases x {shape[1]} features but earlier data had "
                f"{self.shape[0]} x {self.shape[1]}; every patient's radiomics file must have the same T and F."
            )

    def update(self, features_ntf: np.ndarray) -> None:
        """Add a chunk of voxels.

        Args:
            features_ntf: Feature values, shape (n_voxels, T, F), any float dtype; must be finite.

        Raises:
            DataError: Wrong number of dimensions, a shape that differs from earlier chunks, or non-finite values.
        """
        if features_ntf.ndim != 3:
            raise DataError(f"features must have shape (n_voxels, T, F); got shape {features_ntf.shape}.")
        self._check_shape(features_ntf.shape[1:], "this chunk")
        if features_ntf.shape[0] == 0:
            return
        chunk = np.asarray(features_ntf, dtype=np.float64)
        if not np.isfinite(chunk).all():
            raise DataError(
                "feature chunk contains NaN or infinite values; re-run the radiomics stage or mask those voxels."
            )
        count_b = chunk.shape[0]
        mean_b = chunk.mean(axis=0)  # (T, F)
        centred = (chunk - mean_b).transpose(1, 0, 2)  # (T, n, F)
        comoment_b = np.matmul(centred.transpose(0, 2, 1), centred)  # (T, F, F)
        if self.mean_tf is None:
            self.count, self.mean_tf, self.comoment_tff = count_b, mean_b, comoment_b
            return
        self.count, self.mean_tf, self.comoment_tff = merge_centred_moments(
            self.count, self.mean_tf, self.comoment_tff, count_b, mean_b, comoment_b
        )

    def merge(self, other: PhaseCorrelation) -> PhaseCorrelation:
        """Add the statistics of another accumulator (e.g. another patient) to this one, in place.

        Args:
            other: Accumulator over a disjoint set of voxels with the same (T, F).

        Returns:
            self, so that merges chain.
        """
        if other.mean_tf is None:
            return self
        if self.mean_tf is None:
            self.count, self.mean_tf, self.comoment_tff = other.count, other.mean_tf.copy(), other.comoment_tff.copy()
            return self
        self._check_shape(other.shape, "the merged accumulator")  # type: ignore[arg-type]
        self.count, self.mean_tf, self.comoment_tff = merge_centred_moments(
            self.count, self.mean_tf, self.comoment_tff, other.count, other.mean_tf, other.comoment_tff
        )
        return self

    def _require_data(self) -> None:
        if self.mean_tf is None or self.count < 2:
            raise DataError(f"a correlation needs at least 2 voxels; {self.count} were accumulated.")

    def constant_features(self) -> np.ndarray:
        """Which features are constant at which phase.

        A feature is constant when std <= 1e-9 * max(|mean|, tiny), i.e. zero up to float rounding.

        Returns:
            Boolean array, shape (T, F).
        """
        self._require_data()
        variance_tf = np.diagonal(self.comoment_tff, axis1=-2, axis2=-1) / self.count
        std_tf = np.sqrt(np.maximum(variance_tf, 0.0))
        return std_tf <= _RELATIVE_STD_TOLERANCE * np.maximum(np.abs(self.mean_tf), np.finfo(np.float64).tiny)

    def per_phase(self) -> np.ndarray:
        """Pearson correlation matrix at each phase.

        r_t,ij = C_t,ij / sqrt(C_t,ii C_t,jj); a constant feature gets r = 0 with every other feature (see
        ``correlation_from_comoment``), never NaN.

        Returns:
            Correlation matrices, shape (T, F, F), float64.
        """
        self._require_data()
        constant_tf = self.constant_features()
        if constant_tf.any():
            phases, features = np.nonzero(constant_tf)
            logger.warning(
                "%d (phase, feature) pairs are constant over %d voxels and get correlation 0: %s",
                len(phases),
                self.count,
                ", ".join(f"(t={t}, f={f})" for t, f in zip(phases[:10], features[:10])),
            )
        return correlation_from_comoment(self.comoment_tff, constant_tf)

    def averaged(self) -> np.ndarray:
        """Correlation matrix averaged over phases, as in the study.

        r̄_ij = mean over the phases t at which neither i nor j is constant of r_t,ij; 0 if there is no such phase
        (and 1 on the diagonal).

        Returns:
            Averaged correlation matrix, shape (F, F), float64.
        """
        self._require_data()
        corr_tff = correlation_from_comoment(self.comoment_tff, self.constant_features())
        varying_tf = ~self.constant_features()
        valid_tff = varying_tf[:, :, None] & varying_tf[:, None, :]
        n_valid = valid_tff.sum(axis=0)
        total = np.where(valid_tff, corr_tff, 0.0).sum(axis=0)
        averaged = np.divide(total, n_valid, out=np.zeros_like(total), where=n_valid > 0)
        np.fill_diagonal(averaged, 1.0)
        return averaged
