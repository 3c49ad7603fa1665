"""Explain a trained sequence model on a sample of voxels: averaged temporal saliency map and sequence importance."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from vent.errors import ConfigError, DataError
from vent.explain.temporal_saliency import normalise_maps, sequence_importance, study_temporal_saliency, tsr_saliency

logger = logging.getLogger(__name__)


@dataclass
class ExplainResult:
    """Outcome of ``explain_sample``.

    Attributes:
        method: "study" or "tsr".
        mean_map: Mean of the sum-normalised per-voxel maps, shape (T, N).
        importance: Importance of each sequence, shape (N,) (= mean_map averaged over phases).
        time_relevance: Mean_map summed over sequences, shape (T,).
        voxel_maps: Raw (unnormalised) per-voxel maps, shape (V, T, N), or None unless asked for.
        delta: Summary of the IG completeness errors |sum IG - (f(x) - f(0))|: max_abs, mean_abs, n. For "study"
            over every one of the V (1 + T + N) attributions; for "tsr" over the V per-voxel maxima.
        n_voxels: Voxels explained.
        n_steps: IG quadrature nodes.
    """

    method: str
    mean_map: np.ndarray
    importance: np.ndarray
    time_relevance: np.ndarray
    voxel_maps: np.ndarray | None
    delta: dict[str, float]
    n_voxels: int
    n_steps: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (without the per-voxel maps)."""
        return {
            "method": self.method,
            "mean_map": self.mean_map.tolist(),
            "importance": self.importance.tolist(),
            "time_relevance": self.time_relevance.tolist(),
            "delta": dict(self.delta),
            "n_voxels": self.n_voxels,
            "n_steps": self.n_steps,
        }


def probability_forward(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(x) = sigmoid(model(x)) reshaped to (B,): the model's logit turned into a defect probability."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(x)).reshape(x.shape[0])

    return forward


def explain_sample(
    model: torch.nn.Module,
    x: np.ndarray | torch.Tensor,
    method: Literal["study", "tsr"] = "study",
    n_steps: int = 50,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    internal_batch_size: int | None = 4096,
    time_quantile: float = 0.55,
    keep_voxel_maps: bool = False,
) -> ExplainResult:
    """Temporal saliency of a logit model over a sample of voxels, averaged after per-voxel normalisation.

    The model is moved to ``device`` and kept in eval mode (dropout off, so IG completeness holds); the attribution
    runs with cuDNN disabled, because cuDNN's LSTM has no backward pass in eval mode. Its train/eval state is
    restored afterwards. Maps are averaged after dividing each voxel's map by its sum (``normalise_maps``) so that
    high-output voxels do not dominate.

    Args:
        model: Trained model, (B, T, N) -> (B,) or (B, 1) logits.
        x: Standardised sequences of the voxels to explain, shape (V, T, N).
        method: "study" (the study's rank-1 map) or "tsr" (Temporal Saliency Rescaling).
        n_steps: IG quadrature nodes.
        batch_size: Voxels per attribution batch (each expands to (1 + T + N) x n_steps forward rows).
        device: Torch device to run on.
        internal_batch_size: Most rows per forward pass inside IG; None = all at once.
        time_quantile: TSR only: quantile a phase's score must exceed to be kept.
        keep_voxel_maps: Also return the per-voxel maps (V x T x N floats).

    Returns:
        The averaged map, importance, time relevance and IG convergence summary.
    """
    if method not in ("study", "tsr"):
        raise ConfigError(f"explain.method = {method!r} is not valid; use 'study' or 'tsr'.")
    if batch_size < 1:
        raise ConfigError(f"explain.batch_size must be >= 1; got {batch_size}.")
    x_tensor = torch.as_tensor(x, dtype=torch.float32)
    if x_tensor.ndim != 3 or x_tensor.shape[0] == 0:
        raise DataError(f"voxels to explain must have shape (V >= 1, T, N); got {tuple(x_tensor.shape)}.")
    was_training = model.training
    model.to(device)
    model.eval()
    forward = probability_forward(model)
    maps, deltas = [], []
    try:
        with torch.backends.cudnn.flags(enabled=False):
            for start in range(0, x_tensor.shape[0], batch_size):
                batch = x_tensor[start : start + batch_size].to(device)
                if method == "study":
                    batch_maps, batch_delta = study_temporal_saliency(
                        forward, batch, n_steps, internal_batch_size, return_convergence_delta=True
                    )
                else:
                    batch_maps, batch_delta = tsr_saliency(
                        forward, batch, n_steps, time_quantile, internal_batch_size, return_convergence_delta=True
                    )
                maps.append(batch_maps.detach().cpu())
                deltas.append(batch_delta.detach().abs().reshape(-1).cpu())
                logger.debug("explained voxels %d..%d", start, start + len(batch) - 1)
    finally:
        model.train(was_training)
    voxel_maps = torch.cat(maps).double().numpy()
    all_deltas = torch.cat(deltas).double().numpy()
    mean_map = normalise_maps(voxel_maps).mean(axis=0)
    delta = {"max_abs": float(all_deltas.max()), "mean_abs": float(all_deltas.mean()), "n": int(all_deltas.size)}
    logger.info(
        "explained %d voxels with %s saliency: IG |delta| max %.2e, mean %.2e", len(voxel_maps), method,
        delta["max_abs"], delta["mean_abs"],
    )
    return ExplainResult(
        method=method,
        mean_map=mean_map,
        importance=sequence_importance(voxel_maps),
        time_relevance=mean_map.sum(axis=1),
        voxel_maps=voxel_maps if keep_voxel_maps else None,
        delta=delta,
        n_voxels=len(voxel_maps),
        n_steps=n_steps,
    )
