"""Temporal saliency maps built on Integrated Gradients (see docs TSR.md).

Two methods, both with a zero baseline and masking by zero (neutral for standardised inputs):

- ``study_temporal_saliency``: the study's variant. S_t = sum_{t', n} |IG(x) - IG(x with phase t zeroed)|,
  S_n = sum_{t', n'} |IG(x) - IG(x with sequence n zeroed at every phase)|, TSM = S_time outer S_feature (T, N).
  The map is rank 1: it ranks phases and sequences, but cannot say at which phase a sequence matters.
- ``tsr_saliency``: Temporal Saliency Rescaling (Ismail et al., NeurIPS 2020), which localises (phase, sequence)
  cells.

All masked copies of a batch go through a single IG call (``internal_batch_size`` caps memory).
"""

from __future__ import annotations

import numpy as np
import torch

from vent.errors import ConfigError, DataError
from vent.explain.attribution import Forward, check_sequences, integrated_gradients

# Feature score TSR gives every sequence at a phase that is not kept (Ismail et al.'s reference code).
TSR_UNKEPT_PHASE_SCORE = 0.1


def phase_masked_copies(x: torch.Tensor) -> torch.Tensor:
    """Copies of x with one whole phase set to 0.

    Args:
        x: Sequences, shape (B, T, N).

    Returns:
        Shape (T, B, T, N); entry [t] is x with phase t zeroed.
    """
    n_phases = x.shape[1]
    keep = 1.0 - torch.eye(n_phases, dtype=x.dtype, device=x.device)  # (T_mask, T)
    return x.unsqueeze(0) * keep[:, None, :, None]


def sequence_masked_copies(x: torch.Tensor) -> torch.Tensor:
    """Copies of x with one whole sequence (feature) set to 0 at every phase.

    Args:
        x: Sequences, shape (B, T, N).

    Returns:
        Shape (N, B, T, N); entry [n] is x with sequence n zeroed.
    """
    n_sequences = x.shape[2]
    keep = 1.0 - torch.eye(n_sequences, dtype=x.dtype, device=x.device)  # (N_mask, N)
    return x.unsqueeze(0) * keep[:, None, None, :]


def attribution_change(reference_btn: torch.Tensor, masked_mbtn: torch.Tensor) -> torch.Tensor:
    """Total absolute change of the IG map caused by each mask: sum_{t, n} |IG(x) - IG(x_masked)|.

    Args:
        reference_btn: IG of the unmasked input, shape (B, T, N).
        masked_mbtn: IG of M masked copies, shape (M, B, T, N).

    Returns:
        Shape (B, M).
    """
    return (masked_mbtn - reference_btn.unsqueeze(0)).abs().sum(dim=(2, 3)).T


def min_max_scale(values: torch.Tensor, dim: int) -> torch.Tensor:
    """(v - min) / (max - min) along ``dim``; 0 where max == min (as sklearn.preprocessing.minmax_scale)."""
    low = values.amin(dim=dim, keepdim=True)
    span = values.amax(dim=dim, keepdim=True) - low
    return torch.where(span > 0, (values - low) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)


def study_temporal_saliency(
    forward: Forward,
    x: torch.Tensor,
    n_steps: int = 50,
    internal_batch_size: int | None = 4096,
    return_convergence_delta: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The study's temporal saliency map of each voxel.

        S_t = sum_{t', n} |IG(x)_{t', n} - IG(x^{(phase t = 0)})_{t', n}|,      t = 1..T
        S_n = sum_{t', n'} |IG(x)_{t', n'} - IG(x^{(sequence n = 0)})_{t', n'}|, n = 1..N
        TSM_{t, n} = S_t * S_n

    x and its T + N masked copies are stacked into one IG call (1 + T + N attributions per voxel).

    Args:
        forward: Model, (B, T, N) -> (B,) probability.
        x: Standardised sequences, shape (B, T, N).
        n_steps: IG quadrature nodes.
        internal_batch_size: Most (copy x step) rows per forward pass; None = all at once.
        return_convergence_delta: Also return the IG completeness errors of all 1 + T + N calls.

    Returns:
        Maps, shape (B, T, N), non-negative; with ``return_convergence_delta`` also deltas of shape (B, 1 + T + N)
        (column 0: the unmasked input).
    """
    check_sequences(x)
    batch, n_phases, n_sequences = x.shape
    stacked = torch.cat([x.unsqueeze(0), phase_masked_copies(x), sequence_masked_copies(x)])  # (1+T+N, B, T, N)
    n_copies = stacked.shape[0]
    attributions, delta = integrated_gradients(
        forward, stacked.reshape(n_copies * batch, n_phases, n_sequences), n_steps, internal_batch_size
    )
    attributions = attributions.reshape(n_copies, batch, n_phases, n_sequences)
    time_relevance = attribution_change(attributions[0], attributions[1 : 1 + n_phases])  # (B, T)
    sequence_relevance = attribution_change(attributions[0], attributions[1 + n_phases :])  # (B, N)
    maps = time_relevance[:, :, None] * sequence_relevance[:, None, :]
    if return_convergence_delta:
        return maps, delta.reshape(n_copies, batch).T
    return maps


def tsr_saliency(
    forward: Forward,
    x: torch.Tensor,
    n_steps: int = 50,
    time_quantile: float = 0.55,
    internal_batch_size: int | None = 4096,
    return_convergence_delta: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Temporal Saliency Rescaling (Ismail et al., NeurIPS 2020) on IG, zero baseline and zero masking.

    For each voxel:
        time_t = minmax_t( sum |IG(x) - IG(x^{(phase t = 0)})| )
        kept phases: time_t > quantile_{time_quantile}(time)   (linear interpolation, as numpy.quantile)
        for a kept phase t: feat_{t, n} = minmax_n( sum |IG(x) - IG(x^{(cell (t, n) = 0)})| )
        for another phase:  feat_{t, n} = 0.1
        map_{t, n} = time_t * feat_{t, n}

    Their reference code masks with the first input value and uses a random baseline; here both are zero, as in the
    study. Two IG calls per batch: x with its T phase masks, then all kept (t, n) cell masks.

    Args:
        forward: Model, (B, T, N) -> (B,) probability.
        x: Standardised sequences, shape (B, T, N).
        n_steps: IG quadrature nodes.
        time_quantile: Quantile of the time scores a phase must exceed to be kept, in [0, 1].
        internal_batch_size: Most (copy x step) rows per forward pass; None = all at once.
        return_convergence_delta: Also return max |delta| per voxel over all its IG calls, shape (B,).

    Returns:
        Maps, shape (B, T, N), values in [0, 1]; with ``return_convergence_delta`` also the deltas.
    """
    check_sequences(x)
    if not 0.0 <= time_quantile <= 1.0:
        raise ConfigError(f"explain.time_quantile must be in [0, 1]; got {time_quantile}.")
    batch, n_phases, n_sequences = x.shape
    stacked = torch.cat([x.unsqueeze(0), phase_masked_copies(x)])  # (1+T, B, T, N)
    attributions, delta = integrated_gradients(
        forward, stacked.reshape(-1, n_phases, n_sequences), n_steps, internal_batch_size
    )
    attributions = attributions.reshape(1 + n_phases, batch, n_phases, n_sequences)
    delta_max = delta.reshape(1 + n_phases, batch).abs().amax(dim=0)
    reference = attributions[0]
    time_score = min_max_scale(attribution_change(reference, attributions[1:]), dim=1)  # (B, T)
    threshold = torch.quantile(time_score, time_quantile, dim=1, keepdim=True)  # linear, as numpy.quantile
    kept = time_score > threshold  # (B, T)

    feature_score = torch.full_like(time_score.unsqueeze(-1).expand(-1, -1, n_sequences), TSR_UNKEPT_PHASE_SCORE)
    kept_voxel, kept_phase = torch.nonzero(kept, as_tuple=True)  # K pairs
    if len(kept_voxel) > 0:
        cells = x[kept_voxel].unsqueeze(1).repeat(1, n_sequences, 1, 1)  # (K, N, T, N)
        pair_index = torch.arange(len(kept_voxel), device=x.device)[:, None]
        sequence_index = torch.arange(n_sequences, device=x.device)[None, :]
        cells[pair_index, sequence_index, kept_phase[:, None], sequence_index] = 0.0  # copy n: cell (t_k, n) = 0
        cell_attributions, cell_delta = integrated_gradients(
            forward, cells.reshape(-1, n_phases, n_sequences), n_steps, internal_batch_size
        )
        cell_attributions = cell_attributions.reshape(-1, n_sequences, n_phases, n_sequences)
        change = (cell_attributions - reference[kept_voxel].unsqueeze(1)).abs().sum(dim=(2, 3))  # (K, N)
        feature_score[kept_voxel, kept_phase] = min_max_scale(change, dim=1)
        cell_delta_max = cell_delta.reshape(-1, n_sequences).abs().amax(dim=1)
        delta_max = delta_max.scatter_reduce(0, kept_voxel, cell_delta_max, reduce="amax")
    maps = time_score.unsqueeze(-1) * feature_score
    if return_convergence_delta:
        return maps, delta_max
    return maps


def normalise_maps(maps: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Divide each voxel's map by its sum, so every voxel weighs the same in an average.

        M'_{b, t, n} = M_{b, t, n} / sum_{t', n'} M_{b, t', n'}   (a map summing to 0 stays 0)

    The sum (not the max) is used, so a normalised map is a distribution of relevance over (phase, sequence) cells.

    Args:
        maps: Non-negative saliency maps, shape (B, T, N).

    Returns:
        Normalised maps, same shape and type.
    """
    if maps.ndim != 3:
        raise DataError(f"saliency maps must have shape (B, T, N); got {tuple(maps.shape)}.")
    if isinstance(maps, torch.Tensor):
        total = maps.sum(dim=(1, 2), keepdim=True)
        return torch.where(total > 0, maps / torch.where(total > 0, total, torch.ones_like(total)), 0.0)
    total = maps.sum(axis=(1, 2), keepdims=True)
    return np.divide(maps, total, out=np.zeros(maps.shape, dtype=np.result_type(maps, np.float32)), where=total > 0)


def sequence_importance(maps: torch.Tensor | np.ndarray) -> np.ndarray:
    """Importance of each sequence: the mean over phases and voxels of the sum-normalised maps.

        I_n = (1 / (B T)) sum_b sum_t M'_{b, t, n}

    Args:
        maps: Saliency maps, shape (B, T, N).

    Returns:
        Importance, shape (N,), float64; sums to 1/T when every map is non-zero.
    """
    normalised = normalise_maps(maps)
    if isinstance(normalised, torch.Tensor):
        normalised = normalised.detach().cpu().numpy()
    return normalised.astype(np.float64).mean(axis=(0, 1))
