"""explain_sample: eval mode, cuDNN disabled, batching, averaging of normalised maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vent.errors import ConfigError, DataError
from vent.explain import (
    explain_sample,
    normalise_maps,
    probability_forward,
    study_temporal_saliency,
    tsr_saliency,
)


class _ColumnOutput(torch.nn.Module):
    """Wraps a model to return (B, 1) logits, as some heads do."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, None]


@pytest.mark.parametrize("method", ["study", "tsr"])
def test_result_equals_direct_computation_and_is_batch_invariant(planted, method):
    x = planted.x_test[:20]
    result = explain_sample(planted.model, x.numpy(), method=method, n_steps=50, batch_size=7, keep_voxel_maps=True)
    forward = probability_forward(planted.model)
    if method == "study":
        direct = study_temporal_saliency(forward, x, n_steps=50)
    else:
        direct = tsr_saliency(forward, x, n_steps=50)
    np.testing.assert_allclose(result.voxel_maps, direct.double().numpy(), rtol=0, atol=1e-6 * float(direct.max()))
    np.testing.assert_allclose(result.mean_map, normalise_maps(result.voxel_maps).mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(result.importance, result.mean_map.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(result.time_relevance, result.mean_map.sum(axis=1), atol=1e-12)
    assert result.importance.argmax() == planted.sequence
    assert result.n_voxels == 20 and result.delta["max_abs"] < 1e-3
    json.dumps(result.to_dict())


def test_eval_mode_cudnn_disabled_and_state_restored(planted, monkeypatch):
    model = _ColumnOutput(planted.model)
    model.train()
    seen = {}
    real_flags = torch.backends.cudnn.flags

    def recording_flags(*args, **kwargs):
        seen["enabled"] = kwargs.get("enabled", args[0] if args else None)
        return real_flags(*args, **kwargs)

    def check_forward_mode(module, inputs):
        seen.setdefault("training_during_forward", set()).add(module.training)

    monkeypatch.setattr(torch.backends.cudnn, "flags", recording_flags)
    handle = planted.model.register_forward_pre_hook(check_forward_mode)
    try:
        result = explain_sample(model, planted.x_test[:4], n_steps=10)
    finally:
        handle.remove()
        planted.model.eval()
    assert seen["enabled"] is False
    assert seen["training_during_forward"] == {False}
    assert model.training  # restored
    assert result.importance.shape == (planted.x_test.shape[2],)
    assert result.voxel_maps is None


def test_bad_arguments(planted):
    with pytest.raises(ConfigError, match="method"):
        explain_sample(planted.model, planted.x_test[:2], method="shap")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="shape"):
        explain_sample(planted.model, np.zeros((0, 6, 6)))
