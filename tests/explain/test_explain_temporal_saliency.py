"""Study TSM and TSR against straightforward per-mask loops, planted signal, model randomisation, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from scipy.stats import spearmanr
from sklearn.preprocessing import minmax_scale

from vent.errors import DataError
from vent.explain import (
    normalise_maps,
    probability_forward,
    sequence_importance,
    study_temporal_saliency,
    tsr_saliency,
)


def _ig_one(forward, x_tn: torch.Tensor, n_steps: int) -> np.ndarray:
    """IG of one sample, straight from captum."""
    return IntegratedGradients(forward).attribute(x_tn[None], baselines=0.0, n_steps=n_steps)[0].numpy()


def _study_loop(forward, x: torch.Tensor, n_steps: int) -> np.ndarray:
    """The study's TSM computed the obvious way: one IG call per voxel and per mask."""
    maps = []
    for sample in x:
        reference = _ig_one(forward, sample, n_steps)
        time_relevance, feature_relevance = [], []
        for t in range(sample.shape[0]):
            masked = sample.clone()
            masked[t, :] = 0.0
            time_relevance.append(np.abs(reference - _ig_one(forward, masked, n_steps)).sum())
        for n in range(sample.shape[1]):
            masked = sample.clone()
            masked[:, n] = 0.0
            feature_relevance.append(np.abs(reference - _ig_one(forward, masked, n_steps)).sum())
        maps.append(np.outer(time_relevance, feature_relevance))
    return np.stack(maps)


def _tsr_reference(forward, x: torch.Tensor, n_steps: int, quantile: float = 0.55) -> np.ndarray:
    """Ismail et al.'s getTwoStepRescaling (their repository), transcribed per sample with zero masking/baseline."""
    maps = []
    for sample in x:
        n_phases, n_features = sample.shape
        actual = _ig_one(forward, sample, n_steps)
        time_grad = np.zeros((1, n_phases))
        for t in range(n_phases):
            masked = sample.clone()
            masked[t, :] = 0.0
            time_grad[0, t] = np.abs(actual - _ig_one(forward, masked, n_steps)).sum()
        time_contribution = minmax_scale(time_grad, axis=1)
        mean_time = np.quantile(time_contribution, quantile)
        new_grad = np.zeros((n_phases, n_features))
        for t in range(n_phases):
            if time_contribution[0, t] > mean_time:
                input_grad = np.zeros((n_features, 1))
                for c in range(n_features):
                    masked = sample.clone()
                    masked[t, c] = 0.0
                    input_grad[c, :] = np.abs(actual - _ig_one(forward, masked, n_steps)).sum()
                feature_contribution = minmax_scale(input_grad, axis=0)
            else:
                feature_contribution = np.ones((n_features, 1)) * 0.1
            new_grad[t, :] = time_contribution[0, t] * feature_contribution[:, 0]
        maps.append(new_grad)
    return np.stack(maps)


def test_batched_study_map_equals_per_mask_loop(planted):
    forward = probability_forward(planted.model)
    x = planted.x_test[:6]
    batched, delta = study_temporal_saliency(forward, x, n_steps=20, internal_batch_size=500,
                                             return_convergence_delta=True)
    reference = _study_loop(forward, x, n_steps=20)
    # Only float32 summation order differs between one stacked call and separate calls: 1e-6 of the map's scale
    # (measured 7e-8 relative: 3.8e-6 on maps up to 54).
    np.testing.assert_allclose(batched.numpy(), reference, rtol=0, atol=1e-6 * reference.max())
    assert delta.shape == (6, 1 + 6 + 6)
    assert reference.max() > 1e-2


def test_tsr_equals_reference_transcription(planted):
    forward = probability_forward(planted.model)
    x = planted.x_test[:5]
    maps = tsr_saliency(forward, x, n_steps=20, internal_batch_size=500)
    # Maps lie in [0, 1]; min-max scaling of small IG differences amplifies float32 noise (measured 3.6e-7).
    np.testing.assert_allclose(maps.numpy(), _tsr_reference(forward, x, n_steps=20), rtol=0, atol=1e-5)


def test_planted_signal_is_ranked_top(planted):
    forward = probability_forward(planted.model)
    x = planted.x_test[:64]
    study = study_temporal_saliency(forward, x, n_steps=50)
    importance = sequence_importance(study)
    assert importance.argmax() == planted.sequence
    time_relevance = normalise_maps(study).mean(dim=0).sum(dim=1)
    assert set(torch.topk(time_relevance, 2).indices.tolist()) == set(planted.phases)

    tsr_mean = normalise_maps(tsr_saliency(forward, x, n_steps=50)).mean(dim=0)  # (T, N)
    top_cells = {divmod(int(i), tsr_mean.shape[1]) for i in torch.topk(tsr_mean.flatten(), 2).indices}
    assert top_cells == {(t, planted.sequence) for t in planted.phases}
    assert sequence_importance(tsr_saliency(forward, x, n_steps=50)).argmax() == planted.sequence


def test_model_randomisation_changes_the_map(planted, make_tiny_lstm):
    # Adebayo et al. (2018): a map that survives re-initialising the weights explains the input, not the model.
    # Compared on the averaged (T, N) maps (36 cells; 6 importances alone would make a rank correlation too coarse):
    # a random model has no reason to prefer the planted cells, so the rank correlation should be near 0; we require
    # < 0.5 (measured about -0.1), and the planted sequence must lose its top rank.
    x = planted.x_test[:64]
    trained = normalise_maps(study_temporal_saliency(probability_forward(planted.model), x)).mean(dim=0)
    randomised_model = make_tiny_lstm(123)
    randomised = normalise_maps(study_temporal_saliency(probability_forward(randomised_model), x)).mean(dim=0)
    rho = spearmanr(trained.flatten().numpy(), randomised.flatten().numpy())[0]
    assert rho < 0.5
    assert randomised.sum(dim=0).argmax() != planted.sequence


def test_normalise_maps_and_importance():
    rng = np.random.default_rng(0)
    maps = rng.random((4, 3, 5))
    maps[2] = 0.0
    normalised = normalise_maps(maps)
    np.testing.assert_allclose(normalised.sum(axis=(1, 2)), [1, 1, 0, 1])
    np.testing.assert_allclose(normalised[0], maps[0] / maps[0].sum())
    torch.testing.assert_close(normalise_maps(torch.from_numpy(maps)), torch.from_numpy(normalised))
    importance = sequence_importance(maps)
    np.testing.assert_allclose(importance, normalised.mean(axis=(0, 1)))
    # Every voxel counts the same: scaling one voxel's map does not change the importance.
    scaled = maps.copy()
    scaled[1] *= 1000.0
    np.testing.assert_allclose(sequence_importance(scaled), importance)
    with pytest.raises(DataError, match="shape"):
        normalise_maps(maps[0])
