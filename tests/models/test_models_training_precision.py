"""Mixed precision in training (``vent.models.training``): off by default, never silent on a CPU, recorded, and a
checkpoint is only resumed in the precision it was trained in."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from vent.errors import ArtifactError
from vent.models import build_model
from vent.models import training as training_module
from vent.models.data import VoxelBatches, fit_standardiser
from vent.models.training import Precision, TrainSettings, fit, predict_proba, resolve_precision


def _data(make_separable_cases):
    train, val = make_separable_cases("train", 2, 300, seed=1), make_separable_cases("val", 1, 200, seed=2)
    standardiser = fit_standardiser(train, [0, 1, 2, 3], "radiomics")

    def batches(paths, shuffle):
        return VoxelBatches(paths, [0, 1, 2, 3], "radiomics", standardiser, batch_size=100, shuffle=shuffle)

    return batches(train, True), batches(val, False)


def _train(train, val, checkpoint=None, max_epochs=2, **settings):
    torch.manual_seed(0)
    model = build_model("lstm", 4, 5, hidden=[8])
    result = fit(model, train, val, TrainSettings(lr=1e-2, batch_size=100, max_epochs=max_epochs, device="cpu",
                                                  **settings), checkpoint_path=checkpoint)
    return model, result


def test_mixed_precision_on_a_cpu_trains_in_float32_and_says_so(make_separable_cases, caplog) -> None:
    train, val = _data(make_separable_cases)
    plain, plain_result = _train(train, val)
    mixed, mixed_result = _train(train, val, mixed_precision=True)
    assert plain_result.precision == mixed_result.precision == "float32"
    assert plain_result.precision_warning is None
    assert "mixed precision is for CUDA only" in mixed_result.precision_warning
    assert "mixed precision is for CUDA only" in caplog.text
    assert mixed_result.facts()["precision_warning"] == mixed_result.precision_warning
    assert np.array_equal(predict_proba(plain, val, device="cpu"), predict_proba(mixed, val, device="cpu"))
    assert resolve_precision(False, torch.device("cpu")).name == "float32"


def _cpu_bfloat16_kernels():
    """oneDNN's bfloat16 LSTM needs AVX-512 (on an AVX2-only CPU it fails to create its primitive): there, torch's
    own kernels run the LSTM in float32 and autocast still runs the linear head in bfloat16."""
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return contextlib.nullcontext()
    return torch.backends.mkldnn.flags(enabled=False)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN:UserWarning")
def test_autocast_path_trains_and_a_checkpoint_keeps_its_precision(make_separable_cases, monkeypatch, tmp_path):
    """The autocast code path, exercised on the CPU with bfloat16 (CUDA gets bf16 or fp16 from resolve_precision)."""
    train, val = _data(make_separable_cases)
    monkeypatch.setattr(training_module, "resolve_precision", lambda mixed, device: Precision(
        "bfloat16" if mixed else "float32", device.type))
    checkpoint = tmp_path / "checkpoint.pt"
    with _cpu_bfloat16_kernels():
        mixed, result = _train(train, val, checkpoint=checkpoint, mixed_precision=True)
    assert result.precision == "bfloat16" and np.isfinite(result.best_val_loss)
    plain, _ = _train(train, val)
    p_mixed, p_plain = predict_proba(mixed, val, device="cpu"), predict_proba(plain, val, device="cpu")
    assert not np.array_equal(p_mixed, p_plain) and np.corrcoef(p_mixed, p_plain)[0, 1] > 0.9
    with pytest.raises(ArtifactError, match="trained in bfloat16, this run trains in float32"):
        _train(train, val, checkpoint=checkpoint, max_epochs=3)
