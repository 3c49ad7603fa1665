"""Explain a trained sequence model on a sample of voxels: averaged temporal saliency map and sequence importance."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from vent.errors import ConfigError, DataError
from vent.explain.attribution import IG_METHOD
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
        delta: Summary of the final per-voxel IG completeness errors e_v (see ``explain_sample``): max_abs,
            p95_abs, mean_abs, n (= V), n_above_tolerance, gap_at_max (f(x) - f(0) of the worst voxel).
        n_voxels: Voxels explained.
        n_steps: Starting IG quadrature nodes.
        steps_per_voxel: IG nodes each voxel's map was finally computed with, shape (V,).
        convergence: The refinement record: tolerance, max_steps, rounds (n_steps, n_voxels, max_abs of each
            pass), steps_used ({steps: voxels}), converged.
        warnings: Human-readable warnings (also logged), e.g. IG not converged at max_steps, with the figures.
    """

    method: str
    mean_map: np.ndarray
    importance: np.ndarray
    time_relevance: np.ndarray
    voxel_maps: np.ndarray | None
    delta: dict[str, float]
    n_voxels: int
    n_steps: int
    steps_per_voxel: np.ndarray
    convergence: dict[str, Any]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (without the per-voxel maps and steps)."""
        return {
            "method": self.method,
            "mean_map": self.mean_map.tolist(),
            "importance": self.importance.tolist(),
            "time_relevance": self.time_relevance.tolist(),
            "delta": dict(self.delta),
            "n_voxels": self.n_voxels,
            "n_steps": self.n_steps,
            "convergence": dict(self.convergence),
            "warnings": list(self.warnings),
        }


def probability_forward(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(x) = sigmoid(model(x)) reshaped to (B,): the model's logit turned into a defect probability."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(x)).reshape(x.shape[0])

    return forward


def _saliency_pass(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    method: str,
    n_steps: int,
    batch_size: int,
    device: str | torch.device,
    internal_batch_size: int | None,
    time_quantile: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Maps (V, T, N) and per-voxel largest |delta| over all the voxel's IG calls (V,), at one step count."""
    maps, errors = [], []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size].to(device)
        if method == "study":
            batch_maps, batch_delta = study_temporal_saliency(
                forward, batch, n_steps, internal_batch_size, return_convergence_delta=True
            )
        else:
            batch_maps, batch_delta = tsr_saliency(
                forward, batch, n_steps, time_quantile, internal_batch_size, return_convergence_delta=True
            )
        maps.append(batch_maps.detach().cpu())
        errors.append(batch_delta.detach().abs().reshape(len(batch), -1).amax(dim=1).cpu())
        logger.debug("explained voxels %d..%d at %d steps", start, start + len(batch) - 1, n_steps)
    return torch.cat(maps).double().numpy(), torch.cat(errors).double().numpy()


def _output_gaps(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int, device: str | torch.device
) -> np.ndarray:
    """f(x) - f(0) of every voxel (the amount IG distributes), shape (V,)."""
    gaps = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            batch = x[start : start + batch_size].to(device)
            gaps.append((forward(batch) - forward(torch.zeros_like(batch))).cpu())
    return torch.cat(gaps).double().numpy()


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
    completeness_tolerance: float | None = 1e-3,
    max_steps: int = 1024,
) -> ExplainResult:
    """Temporal saliency of a logit model over a sample of voxels, IG refined until complete, averaged after
    per-voxel normalisation.

    IG convergence. A voxel's map is built from several IG calls (1 + T + N for "study": x and its masked copies;
    1 + T + K N for "tsr"). Its completeness error is the largest quadrature error over those calls,

        e_v = max_c |sum_i IG_i(x_c) - (f(x_c) - f(0))|,

    in probability units (absolute, not relative to the gap: f is a probability, so every gap is at most 1, and a
    relative error would explode for voxels whose output barely leaves the baseline while their attributions are
    negligible). Every voxel starts at ``n_steps`` nodes; the voxels with e_v > ``completeness_tolerance`` are
    explained again with twice the nodes (capped at ``max_steps``) until every e_v is below tolerance or
    ``max_steps`` was used. The criterion is the largest e_v (not a quantile): each voxel weighs the same in the
    average. Refining per voxel costs only the slow voxels, and a voxel's map does not depend on which other
    voxels were sampled. If voxels remain above tolerance, a warning with the figures is logged and returned.
    ``completeness_tolerance=None`` runs ``n_steps`` once and only reports the errors.

    The model is moved to ``device`` and kept in eval mode (dropout off, so IG completeness holds); the attribution
    runs with cuDNN disabled, because cuDNN's LSTM has no backward pass in eval mode. Its train/eval state is
    restored afterwards. Maps are averaged after dividing each voxel's map by its sum (``normalise_maps``) so that
    high-output voxels do not dominate.

    Args:
        model: Trained model, (B, T, N) -> (B,) or (B, 1) logits.
        x: Standardised sequences of the voxels to explain, shape (V, T, N).
        method: "study" (the study's rank-1 map) or "tsr" (Temporal Saliency Rescaling).
        n_steps: IG quadrature nodes to start from.
        batch_size: Voxels per attribution batch (each expands to (1 + T + N) x n_steps forward rows).
        device: Torch device to run on.
        internal_batch_size: Most rows per forward pass inside IG; None = all at once.
        time_quantile: TSR only: quantile a phase's score must exceed to be kept.
        keep_voxel_maps: Also return the per-voxel maps (V x T x N floats).
        completeness_tolerance: Largest allowed e_v (probability units), or None for a single pass.
        max_steps: Most IG nodes (>= n_steps).

    Returns:
        The averaged map, importance, time relevance, IG convergence record and warnings.

    References:
        Sundararajan, Taly & Yan, "Axiomatic attribution for deep networks", ICML 2017 (completeness, Sec. 3).
    """
    if method not in ("study", "tsr"):
        raise ConfigError(f"explain.method = {method!r} is not valid; use 'study' or 'tsr'.")
    if batch_size < 1:
        raise ConfigError(f"explain.batch_size must be >= 1; got {batch_size}.")
    if max_steps < n_steps:
        raise ConfigError(f"explain.max_steps ({max_steps}) must be >= explain.n_steps ({n_steps}).")
    if completeness_tolerance is not None and not completeness_tolerance > 0:
        raise ConfigError(f"explain.completeness_tolerance must be > 0; got {completeness_tolerance}.")
    x_tensor = torch.as_tensor(x, dtype=torch.float32)
    if x_tensor.ndim != 3 or x_tensor.shape[0] == 0:
        raise DataError(f"voxels to explain must have shape (V >= 1, T, N); got {tuple(x_tensor.shape)}.")
    n_voxels = x_tensor.shape[0]
    was_training = model.training
    model.to(device)
    model.eval()
    forward = probability_forward(model)
    voxel_maps = np.zeros((n_voxels, *x_tensor.shape[1:]))
    errors = np.zeros(n_voxels)
    steps_per_voxel = np.zeros(n_voxels, dtype=np.int64)
    rounds: list[dict[str, Any]] = []
    pending, steps = np.arange(n_voxels), n_steps
    try:
        with torch.backends.cudnn.flags(enabled=False):
            gaps = _output_gaps(forward, x_tensor, batch_size, device)
            while True:
                maps, pass_errors = _saliency_pass(
                    forward, x_tensor[pending], method, steps, batch_size, device, internal_batch_size, time_quantile
                )
                voxel_maps[pending], errors[pending], steps_per_voxel[pending] = maps, pass_errors, steps
                rounds.append({"n_steps": steps, "n_voxels": int(len(pending)), "max_abs": float(pass_errors.max())})
                if completeness_tolerance is None:
                    break
                pending = pending[pass_errors > completeness_tolerance]
                if len(pending) == 0 or steps >= max_steps:
                    break
                steps = min(2 * steps, max_steps)
                logger.debug("IG: %d voxels above tolerance, raising steps to %d", len(pending), steps)
    finally:
        model.train(was_training)
    worst = int(errors.argmax())
    n_above = int((errors > completeness_tolerance).sum()) if completeness_tolerance is not None else 0
    delta = {
        "max_abs": float(errors.max()),
        "p95_abs": float(np.quantile(errors, 0.95)),
        "mean_abs": float(errors.mean()),
        "n": int(n_voxels),
        "n_above_tolerance": n_above,
        "gap_at_max": float(gaps[worst]),
    }
    used, counts = np.unique(steps_per_voxel, return_counts=True)
    convergence = {
        "tolerance": completeness_tolerance,
        "tolerance_kind": "absolute, probability units: max over voxels of max over the voxel's IG calls",
        "integration": IG_METHOD,
        "n_steps_start": int(n_steps),
        "max_steps": int(max_steps),
        "rounds": rounds,
        "steps_used": {str(int(s)): int(c) for s, c in zip(used, counts)},
        "converged": completeness_tolerance is None or n_above == 0,
    }
    warnings = []
    if n_above:
        message = (
            f"Integrated Gradients did not converge for {n_above} of {n_voxels} voxels at explain.max_steps = "
            f"{max_steps}: largest completeness error {delta['max_abs']:.2e} (output gap f(x) - f(0) of that voxel "
            f"{delta['gap_at_max']:.2e}) is above explain.completeness_tolerance = {completeness_tolerance:.1e}. "
            f"Their maps are kept but inexact; raise explain.max_steps to refine them."
        )
        logger.warning(message)
        warnings.append(message)
    mean_map = normalise_maps(voxel_maps).mean(axis=0)
    logger.info(
        "explained %d voxels with %s saliency: IG |delta| max %.2e, mean %.2e, steps %s", n_voxels, method,
        delta["max_abs"], delta["mean_abs"], convergence["steps_used"],
    )
    return ExplainResult(
        method=method,
        mean_map=mean_map,
        importance=sequence_importance(voxel_maps),
        time_relevance=mean_map.sum(axis=1),
        voxel_maps=voxel_maps if keep_voxel_maps else None,
        delta=delta,
        n_voxels=n_voxels,
        n_steps=n_steps,
        steps_per_voxel=steps_per_voxel,
        convergence=convergence,
        warnings=warnings,
    )
