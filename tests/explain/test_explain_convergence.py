"""IG convergence: steps are raised per voxel until the completeness error is below tolerance, or a loud warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients

from vent.config import ExplainConfig
from vent.errors import ConfigError
from vent.explain import explain_sample, probability_forward, study_temporal_saliency, tsr_saliency

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def steep_lstm(make_tiny_lstm):
    """A random TinyLSTM with scaled-up weights: a steep integrand that 4-8 Gauss-Legendre nodes do not resolve.

    Measured on these 24 voxels (largest |delta| of the unmasked inputs): 4 steps 2.8e-1, 8 steps 5e-2, 16 steps
    1.3e-2, 32 steps 1.1e-4, 64 steps 1.5e-7; output gaps up to 0.58.
    """
    model = make_tiny_lstm(0)
    with torch.no_grad():
        for parameter in model.lstm.parameters():
            parameter.mul_(6.0)
        model.head.weight.mul_(10.0)
    return model


@pytest.fixture(scope="module")
def voxels() -> torch.Tensor:
    return torch.randn(24, 6, 6, generator=torch.Generator().manual_seed(3))


def _captum_delta(forward, x: torch.Tensor, n_steps: int) -> torch.Tensor:
    _, delta = IntegratedGradients(forward).attribute(
        x, baselines=0.0, n_steps=n_steps, method="gausslegendre", return_convergence_delta=True
    )
    return delta.abs()


@pytest.mark.parametrize("method", ["study", "tsr"])
def test_steps_are_raised_until_every_voxel_is_below_tolerance(steep_lstm, voxels, method):
    forward = probability_forward(steep_lstm)
    assert _captum_delta(forward, voxels, 4).max() > 100 * TOLERANCE  # few steps: far from complete
    result = explain_sample(
        steep_lstm,
        voxels,
        method=method,
        n_steps=4,
        completeness_tolerance=TOLERANCE,
        max_steps=512,
        keep_voxel_maps=True,
    )
    rounds = result.convergence["rounds"]
    assert rounds[0] == {"n_steps": 4, "n_voxels": 24, "max_abs": pytest.approx(rounds[0]["max_abs"])}
    assert rounds[0]["max_abs"] > 100 * TOLERANCE
    assert [r["n_steps"] for r in rounds] == [4 * 2**i for i in range(len(rounds))]  # doubled each pass
    n_per_pass = [r["n_voxels"] for r in rounds]
    assert len(rounds) >= 3 and n_per_pass == sorted(n_per_pass, reverse=True)
    assert result.delta["max_abs"] <= TOLERANCE and result.delta["n_above_tolerance"] == 0
    assert result.convergence["converged"] and result.warnings == []
    assert sum(result.convergence["steps_used"].values()) == 24
    # Each voxel's map is exactly its own map at its final step count, and its unmasked input's completeness
    # error there (recomputed by captum directly) is below the tolerance.
    saliency = study_temporal_saliency if method == "study" else tsr_saliency
    for steps in np.unique(result.steps_per_voxel):
        members = np.flatnonzero(result.steps_per_voxel == steps)
        direct = saliency(forward, voxels[members], n_steps=int(steps))
        np.testing.assert_allclose(result.voxel_maps[members], direct.double().numpy(), rtol=1e-5, atol=1e-9)
        assert _captum_delta(forward, voxels[members], int(steps)).max() <= TOLERANCE


def test_completeness_error_is_captums_delta_recomputed(steep_lstm, voxels):
    # The error the loop checks equals |sum IG - (f(x) - f(0))| recomputed from the attributions, and captum's
    # return_convergence_delta, for the unmasked inputs of the first pass (the masked copies only add to the max).
    forward = probability_forward(steep_lstm)
    attributions, delta = IntegratedGradients(forward).attribute(
        voxels, baselines=0.0, n_steps=4, return_convergence_delta=True
    )
    with torch.no_grad():
        gap = forward(voxels) - forward(torch.zeros_like(voxels))
    recomputed = (attributions.sum(dim=(1, 2)) - gap).abs()
    torch.testing.assert_close(recomputed, delta.abs(), rtol=0, atol=1e-5)
    result = explain_sample(steep_lstm, voxels, n_steps=4, completeness_tolerance=None)
    assert result.convergence["rounds"][0]["max_abs"] >= float(recomputed.max()) - 1e-6
    assert abs(result.delta["gap_at_max"]) <= float(gap.abs().max()) + 1e-6


def test_not_converged_at_max_steps_is_a_loud_recorded_warning(steep_lstm, voxels, caplog):
    with caplog.at_level(logging.WARNING, logger="vent.explain.explainer"):
        result = explain_sample(steep_lstm, voxels, n_steps=4, completeness_tolerance=TOLERANCE, max_steps=8)
    assert not result.convergence["converged"]
    assert [r["n_steps"] for r in result.convergence["rounds"]] == [4, 8]
    assert result.delta["max_abs"] > TOLERANCE and result.delta["n_above_tolerance"] > 0
    assert len(result.warnings) == 1
    message = result.warnings[0]
    assert f"{result.delta['max_abs']:.2e}" in message and "explain.max_steps = 8" in message
    assert "explain.completeness_tolerance" in message
    assert message in caplog.text
    assert result.to_dict()["warnings"] == [message]


def test_converged_model_needs_a_single_pass(planted):
    result = explain_sample(planted.model, planted.x_test[:16], n_steps=64, completeness_tolerance=TOLERANCE)
    assert len(result.convergence["rounds"]) == 1 and result.convergence["steps_used"] == {"64": 16}


def test_bad_settings(planted):
    with pytest.raises(ConfigError, match="max_steps"):
        explain_sample(planted.model, planted.x_test[:2], n_steps=64, max_steps=32)
    with pytest.raises(ConfigError, match="completeness_tolerance"):
        explain_sample(planted.model, planted.x_test[:2], completeness_tolerance=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        ExplainConfig(n_steps=64, max_steps=32)
    config = ExplainConfig()
    assert config.completeness_tolerance == 1e-3 and config.max_steps >= config.n_steps
