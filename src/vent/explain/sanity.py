"""Checks that make an explanation believable: deletion of the sequences it calls important (one k, or a curve over
k against random orderings), model randomisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from vent.errors import ConfigError, DataError
from vent.explain.attribution import Forward, check_sequences


def _predict(forward: Forward, x: torch.Tensor, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        batches = [forward(x[i : i + batch_size]).reshape(-1) for i in range(0, len(x), batch_size)]
    return torch.cat(batches).cpu().numpy()


def zero_sequences(x: torch.Tensor, sequences: np.ndarray) -> torch.Tensor:
    """Copy of x (B, T, N) with the given sequences set to 0 at every phase (the neutral value after scaling)."""
    out = x.clone()
    out[:, :, torch.as_tensor(np.asarray(sequences), dtype=torch.long, device=x.device)] = 0.0
    return out


DELETION_CURVE_DEFINITION = (
    "AUC of the held-out voxels after setting k sequences to 0 at every phase (no retraining): top_auc for the k "
    "most important (most relevant first), random_auc_* over n_random subsets of k sequences drawn uniformly from "
    "all N, independently for each k (mean, SD with ddof 0, 5th and 95th percentile with linear interpolation); "
    "k = 0 is the unperturbed AUC."
)


def _check_deletion_inputs(
    x: torch.Tensor, y: np.ndarray, importance: np.ndarray, n_random: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (y, importance) as flat numpy arrays, for the deletion check and curve."""
    check_sequences(x)
    y = np.asarray(y).reshape(-1)
    importance = np.asarray(importance, dtype=np.float64).reshape(-1)
    n_sequences = x.shape[2]
    if len(y) != x.shape[0] or len(np.unique(y)) != 2:
        raise DataError(f"y must hold both classes for the {x.shape[0]} voxels; got {len(y)} labels {np.unique(y)}.")
    if importance.shape != (n_sequences,):
        raise DataError(f"importance must have {n_sequences} entries (one per sequence); got {importance.shape}.")
    if n_random < 1:
        raise ConfigError(f"deletion n_random must be >= 1; got {n_random}.")
    return y, importance


def deletion_curve(
    forward: Forward,
    x: torch.Tensor,
    y: np.ndarray,
    importance: np.ndarray,
    ks: Sequence[int],
    n_random: int = 10,
    seed: int = 0,
    batch_size: int = 4096,
) -> dict[str, Any]:
    """AUC as the most important sequences are removed, against removing random ones (a region-perturbation curve).

    With O = the sequences ordered by decreasing ``importance`` (stable: ties keep column order) and x^(-S) = x with
    the sequences S set to 0 at every phase (the neutral value of standardised inputs):

        top_auc[k]     = AUC(f(x^(-O[:k])), y)
        random_aucs[k] = [ AUC(f(x^(-S_{k,r})), y) for r = 1..n_random ],   S_{k,r} a uniform random k-subset of 1..N

    drawn independently for every k (so a random subset may contain important sequences: the baseline of an
    uninformed ranking). This is the "most relevant first" region-perturbation curve against its random baseline
    (Samek et al., "Evaluating the visualization of what a deep neural network has learned", IEEE TNNLS 28(11),
    2017, there with image regions and their area over the curve); an explanation is informative when the top-k
    curve lies below the random band. It is the "remove" half of "remove and retrain" (Hooker et al., "A benchmark
    for interpretability methods in deep neural networks", NeurIPS 2019) without retraining: the model sees inputs
    it was not trained on, so a drop measures what this model relies on, not what information the data hold.
    The random draws of k are those of :func:`deletion_check` with the same k and seed when ks = [k].

    Args:
        forward: Model, (B, T, N) -> (B,) probability.
        x: Standardised sequences of held-out voxels, shape (B, T, N).
        y: Ground truth (0/1), shape (B,), both classes present.
        importance: Importance of each sequence, shape (N,).
        ks: Numbers of sequences to remove, each in [0, N] (0 = nothing removed: the base AUC; N = all).
        n_random: Random subsets per k (>= 1).
        seed: Seed of the random subsets (one generator, drawn k by k in ``ks`` order; nothing drawn for k = 0).
        batch_size: Voxels per forward pass.

    Returns:
        A JSON-serialisable dict of lists aligned with ``ks``: auc (the base AUC, a float), ks, top_order (all N
        indices by decreasing importance), top_auc, random_auc_mean, random_auc_sd (ddof 0), random_auc_p5,
        random_auc_p95 (linear interpolation between the n_random values), random_aucs (the n_random values of
        each k), n_random, seed.
    """
    y, importance = _check_deletion_inputs(x, y, importance, n_random)
    n_sequences = x.shape[2]
    ks = [int(k) for k in ks]
    if not ks or any(not 0 <= k <= n_sequences for k in ks):
        raise ConfigError(f"deletion ks must be a non-empty list of values in [0, {n_sequences}]; got {ks}.")

    def auc_without(removed: np.ndarray) -> float:
        inputs = zero_sequences(x, removed) if len(removed) else x
        return float(roc_auc_score(y, _predict(forward, inputs, batch_size)))

    base_auc = auc_without(np.array([], dtype=np.int64))
    order = np.argsort(-importance, kind="stable")
    rng = np.random.default_rng(seed)
    top_aucs, random_aucs = [], []
    for k in ks:
        top_aucs.append(auc_without(order[:k]) if k else base_auc)
        random_aucs.append(
            [auc_without(rng.choice(n_sequences, k, replace=False)) for _ in range(n_random)] if k
            else [base_auc] * n_random
        )
    table = np.asarray(random_aucs)
    return {
        "auc": base_auc,
        "ks": ks,
        "top_order": order.tolist(),
        "top_auc": top_aucs,
        "random_auc_mean": table.mean(axis=1).tolist(),
        "random_auc_sd": table.std(axis=1).tolist(),
        "random_auc_p5": np.percentile(table, 5, axis=1).tolist(),
        "random_auc_p95": np.percentile(table, 95, axis=1).tolist(),
        "random_aucs": random_aucs,
        "n_random": n_random,
        "seed": seed,
    }


def deletion_ks(n_sequences: int, max_points: int) -> list[int]:
    """The k of a deletion curve: 0 .. N - 1, or ``max_points`` of them evenly spaced (always 0 and N - 1)."""
    if n_sequences < 1 or max_points < 2:
        raise ConfigError(f"need n_sequences >= 1 and max_points >= 2; got {n_sequences} and {max_points}.")
    if n_sequences <= max_points:
        return list(range(n_sequences))
    return [int(k) for k in np.unique(np.linspace(0, n_sequences - 1, max_points).round().astype(np.int64))]


def deletion_check(
    forward: Forward,
    x: torch.Tensor,
    y: np.ndarray,
    importance: np.ndarray,
    k: int,
    n_random: int = 10,
    seed: int = 0,
    batch_size: int = 4096,
) -> dict[str, Any]:
    """Does removing the k most important sequences hurt the AUC more than removing k random ones?

        drop(S) = AUC(f(x), y) - AUC(f(x with the sequences S set to 0 at every phase), y)

    compared for S = top-k by ``importance`` and for ``n_random`` subsets of k sequences drawn uniformly from all N
    (so a random subset may contain important ones: the baseline of an uninformed ranking). The point k of
    :func:`deletion_curve`, as drops.

    Args:
        forward: Model, (B, T, N) -> (B,) probability.
        x: Standardised sequences of held-out voxels, shape (B, T, N).
        y: Ground truth (0/1), shape (B,), both classes present.
        importance: Importance of each sequence, shape (N,).
        k: Number of sequences to remove, 1 <= k < N.
        n_random: Number of random subsets.
        seed: Seed of the random subsets.
        batch_size: Voxels per forward pass.

    Returns:
        A JSON-serialisable dict: auc, k, top_k (indices), top_k_auc, top_k_drop, random_aucs, random_drops,
        random_drop_mean, random_drop_std, fraction_random_at_least_top (share of random drops >= the top-k drop).
    """
    _check_deletion_inputs(x, y, importance, n_random)
    if not 1 <= k < x.shape[2]:
        raise ConfigError(f"deletion k must be in [1, {x.shape[2] - 1}]; got {k}.")
    curve = deletion_curve(forward, x, y, importance, [k], n_random=n_random, seed=seed, batch_size=batch_size)
    base_auc, top_auc, random_aucs = curve["auc"], curve["top_auc"][0], curve["random_aucs"][0]
    random_drops = [base_auc - auc for auc in random_aucs]
    top_drop = base_auc - top_auc
    return {
        "auc": base_auc,
        "k": k,
        "top_k": curve["top_order"][:k],
        "top_k_auc": top_auc,
        "top_k_drop": top_drop,
        "random_aucs": random_aucs,
        "random_drops": random_drops,
        "random_drop_mean": float(np.mean(random_drops)),
        "random_drop_std": float(np.std(random_drops)),
        "fraction_random_at_least_top": float(np.mean(np.asarray(random_drops) >= top_drop)),
    }


def randomisation_subset(n_voxels: int, n_max: int) -> np.ndarray:
    """Up to ``n_max`` evenly spaced indices into V voxels (so a sample ordered by patient and class is spanned)."""
    if n_voxels < 1 or n_max < 1:
        raise DataError(f"need at least one voxel and n_max >= 1; got {n_voxels} voxels, n_max {n_max}.")
    return np.unique(np.linspace(0, n_voxels - 1, min(n_voxels, n_max)).round().astype(np.int64))


def model_randomisation_check(
    random_model: torch.nn.Module,
    x: np.ndarray | torch.Tensor,
    trained_voxel_maps: np.ndarray,
    n_voxels: int = 64,
    **explain_kwargs: Any,
) -> dict[str, Any]:
    """Model randomisation (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018), on the same voxels.

    The trained model's per-voxel maps of a subset of voxels are compared with a re-initialised model's maps of
    exactly those voxels:

        rho = Spearman( mean_v M'_trained[v], mean_v M'_random[v] ),   v in the same subset,

    with M' the sum-normalised (T, N) maps; also the median over v of the per-voxel Spearman of M'_trained[v] and
    M'_random[v]. A map that reflects what the model learned changes substantially (rho well below 1); rho near 1
    means it only reflects the input.

    Args:
        random_model: The same architecture with re-initialised weights, (B, T, N) -> (B,) logits.
        x: The standardised sequences the trained maps were computed on, shape (V, T, N).
        trained_voxel_maps: The trained model's per-voxel maps of x, shape (V, T, N) (raw or normalised).
        n_voxels: Most voxels explained with the random model (evenly spaced over x, ``randomisation_subset``).
        **explain_kwargs: Passed to ``explain_sample`` (method, n_steps, tolerance, device, ...), as for the
            trained maps.

    Returns:
        A JSON-serialisable dict: spearman_trained_vs_random_map, spearman_per_voxel_median, n_voxels, voxel_index,
        random_delta (the random model's IG completeness summary) and warnings (its IG warnings).
    """
    from scipy import stats

    from vent.explain.explainer import explain_sample
    from vent.explain.temporal_saliency import normalise_maps

    trained_voxel_maps = np.asarray(trained_voxel_maps, dtype=np.float64)
    if trained_voxel_maps.ndim != 3 or trained_voxel_maps.shape != tuple(np.shape(x)):
        raise DataError(
            f"trained maps {trained_voxel_maps.shape} must have the shape of the voxels x {tuple(np.shape(x))}."
        )
    index = randomisation_subset(len(trained_voxel_maps), n_voxels)
    subset = torch.as_tensor(x, dtype=torch.float32)[torch.as_tensor(index)]
    random_result = explain_sample(random_model, subset, keep_voxel_maps=True, **explain_kwargs)
    trained = normalise_maps(trained_voxel_maps[index])
    randomised = normalise_maps(random_result.voxel_maps)
    rho = stats.spearmanr(trained.mean(axis=0).ravel(), randomised.mean(axis=0).ravel()).statistic
    per_voxel = [stats.spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(trained, randomised)]
    return {
        "spearman_trained_vs_random_map": float(rho),
        "spearman_per_voxel_median": float(np.nanmedian(per_voxel)) if np.isfinite(per_voxel).any() else None,
        "n_voxels": int(len(index)),
        "voxel_index": index.tolist(),
        "voxels": "the same voxels for both maps (evenly spaced over the explained sample)",
        "random_delta": random_result.delta,
        "warnings": list(random_result.warnings),
    }
