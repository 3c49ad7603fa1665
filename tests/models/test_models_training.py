"""Tests of training, early stopping, checkpoint resume and prediction (vent.models.training)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vent.errors import ArtifactError, ConfigError
from vent.io.seals import SEAL_SUFFIX
from vent.models import build_model, model_input_kind
from vent.models.data import VoxelBatches, fit_standardiser
from vent.models.registry import REGISTRY
from vent.models.training import TrainSettings, fit, predict_proba

NETWORKS = tuple(spec.name for spec in REGISTRY if spec.builder is not None and spec.family == "sequence")
"""Every registry entry with a network (rules and registration methods train nothing)."""


def _labels(paths: list[Path]) -> np.ndarray:
    labels = []
    for path in paths:
        with h5py.File(path, "r") as h5:
            labels.append(h5["labels"][()])
    return np.concatenate(labels)


def _batches(paths, kind, standardiser, shuffle, batch_size=128, seed=0):
    features = None if kind == "raw" else [0, 1, 2, 3]
    return VoxelBatches(paths, features, kind, standardiser, batch_size=batch_size, shuffle=shuffle, seed=seed)


def _data(make_separable_cases, kind):
    train = make_separable_cases("train", n_cases=2, n_voxels=400, seed=1)
    val = make_separable_cases("val", n_cases=1, n_voxels=300, seed=2)
    test = make_separable_cases("test", n_cases=1, n_voxels=300, seed=3)
    standardiser = fit_standardiser(train, None if kind == "raw" else [0, 1, 2, 3], kind)
    return (
        _batches(train, kind, standardiser, shuffle=True),
        _batches(val, kind, standardiser, shuffle=False),
        _batches(test, kind, standardiser, shuffle=False),
        test,
    )


def _initial_loss(model, batches) -> float:
    model.eval()
    with torch.no_grad():
        losses = [
            torch.nn.functional.binary_cross_entropy_with_logits(model(x), y, reduction="sum") for x, y in batches
        ]
    return float(sum(losses)) / batches.n_voxels


@pytest.mark.parametrize("name", NETWORKS)
def test_every_model_learns_a_separable_toy_problem(name: str, make_separable_cases) -> None:
    kind = model_input_kind(name)
    train, val, test, test_paths = _data(make_separable_cases, kind)
    torch.manual_seed(0)
    model = build_model(name, train.n_inputs, train.n_steps)
    before = _initial_loss(model, val)
    settings = TrainSettings(lr=3e-3, batch_size=128, max_epochs=6, patience=6, device="cpu")
    result = fit(model, train, val, settings)
    assert result.epochs_run == 6 and not result.stopped_early
    assert result.best_val_loss < 0.6 * before, (before, result.history)
    probabilities = predict_proba(model, test, device="cpu")
    labels = _labels(test_paths)
    assert probabilities.shape == labels.shape and probabilities.dtype == np.float32
    assert roc_auc_score(labels, probabilities) > 0.9


def test_auto_pos_weight_and_input_order_of_predictions(make_separable_cases) -> None:
    train, val, test, test_paths = _data(make_separable_cases, "radiomics")
    torch.manual_seed(0)
    model = build_model("lstm", 4, 5, hidden=(8, 4))
    result = fit(model, train, val, TrainSettings(lr=1e-3, batch_size=128, max_epochs=1, pos_weight="auto"))
    labels = _labels(train.paths)
    assert result.pos_weight == pytest.approx((labels == 0).sum() / (labels == 1).sum(), rel=1e-12)
    # predict_proba returns the voxels in file order: compare with one direct forward pass over the whole file.
    x_all = torch.cat([x for x, _ in test])
    with torch.no_grad():
        expected = torch.sigmoid(model(x_all)).numpy()
    np.testing.assert_allclose(predict_proba(model, test), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="unshuffled"):
        predict_proba(model, train)


def test_early_stopping_stops_and_restores_the_best_weights(make_separable_cases) -> None:
    train, val, _, _ = _data(make_separable_cases, "radiomics")
    torch.manual_seed(0)
    model = build_model("lstm", 4, 5, hidden=(8, 4))
    states = []
    # min_delta = 10 makes every epoch after the first a non-improvement.
    settings = TrainSettings(lr=1e-2, batch_size=128, max_epochs=50, patience=3, min_delta=10.0)
    result = fit(model, train, val, settings,
                 progress=lambda record: states.append({k: v.clone() for k, v in model.state_dict().items()}))
    assert result.stopped_early
    assert result.epochs_run == 4 and len(result.history) == 4
    assert result.best_epoch == 0
    assert not torch.equal(states[0]["head.weight"], states[-1]["head.weight"])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, states[0][key], rtol=0, atol=0)


class _Interrupt(Exception):
    pass


def test_interrupted_fit_resumes_to_the_same_weights(make_separable_cases, tmp_path: Path) -> None:
    train, val, _, _ = _data(make_separable_cases, "radiomics")
    settings = TrainSettings(lr=3e-3, batch_size=128, max_epochs=4, patience=10, seed=11)

    torch.manual_seed(0)
    reference = build_model("lstm", 4, 5, hidden=(16, 8), dropout=0.3)
    reference_result = fit(reference, train, val, settings)

    checkpoint = tmp_path / "fold0" / "checkpoint.pt"

    def interrupt_after_epoch_2(record: dict) -> None:
        if record["epoch"] == 2:
            raise _Interrupt

    torch.manual_seed(0)
    first_try = build_model("lstm", 4, 5, hidden=(16, 8), dropout=0.3)
    with pytest.raises(_Interrupt):
        fit(first_try, train, val, settings, checkpoint_path=checkpoint, progress=interrupt_after_epoch_2)
    assert checkpoint.is_file()
    assert [p.name for p in checkpoint.parent.iterdir() if not p.name.endswith(SEAL_SUFFIX)] == ["checkpoint.pt"]

    torch.manual_seed(123)  # different initial weights: everything must come from the checkpoint
    resumed = build_model("lstm", 4, 5, hidden=(16, 8), dropout=0.3)
    result = fit(resumed, train, val, settings, checkpoint_path=checkpoint)
    assert result.resumed_from_epoch == 3
    assert result.epochs_run == 4 and result.best_epoch == reference_result.best_epoch
    assert [h["val_loss"] for h in result.history] == [h["val_loss"] for h in reference_result.history]
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)

    with pytest.raises(ArtifactError, match="different settings"):
        fit(resumed, train, val, TrainSettings(lr=1e-3, batch_size=128, max_epochs=4, seed=11),
            checkpoint_path=checkpoint)
    with pytest.raises(ArtifactError, match="architecture"):
        fit(build_model("lstm", 4, 5, hidden=(8,)), train, val, settings, checkpoint_path=checkpoint)
    # same weight shapes, other spec (dropout): a silent resume would train another model
    with pytest.raises(ArtifactError, match="another model architecture"):
        fit(build_model("lstm", 4, 5, hidden=(16, 8), dropout=0.1), train, val, settings, checkpoint_path=checkpoint)
    # pos_weight changed: the checkpoint's loss weight must not be kept silently
    weighted = TrainSettings(lr=3e-3, batch_size=128, max_epochs=4, patience=10, seed=11, pos_weight=2.0)
    with pytest.raises(ArtifactError, match="pos_weight"):
        fit(resumed, train, val, weighted, checkpoint_path=checkpoint)


def test_an_unavailable_cuda_device_is_an_error_naming_execution_device(monkeypatch) -> None:
    from vent.models.training import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"execution\.device is 'cuda'.*'auto'"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")  # 'auto' resolves, and fit records the device used


def test_settings_are_validated() -> None:
    assert TrainSettings().lr == 1e-4 and TrainSettings().batch_size == 2048 and TrainSettings().max_epochs == 500
    assert TrainSettings().clip_grad_norm == 1.0
    with pytest.raises(ConfigError, match="lr must be"):
        TrainSettings(lr=0)
    with pytest.raises(ConfigError, match="pos_weight"):
        TrainSettings(pos_weight="balanced")
    with pytest.raises(ConfigError, match="patience"):
        TrainSettings(patience=0)


def _without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def _assert_same_training(resumed, resumed_result, fresh, fresh_result, resumed_ckpt: Path, fresh_ckpt: Path) -> None:
    """Resumed and fresh runs agree exactly: result, history, best weights and the last checkpoint's state."""
    from vent.models.training import load_checkpoint

    assert _without_seconds(resumed_result.history) == _without_seconds(fresh_result.history)
    for name in ("best_epoch", "best_val_loss", "epochs_run", "stopped_early", "pos_weight"):
        assert getattr(resumed_result, name) == getattr(fresh_result, name), name
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)
    saved, expected = load_checkpoint(resumed_ckpt), load_checkpoint(fresh_ckpt)
    for key in ("epoch", "best_epoch", "best_val_loss", "bad_epochs", "stopped_early", "settings"):
        assert saved[key] == expected[key], key
    for key, value in expected["model"].items():  # the last epoch's weights, not only the best ones
        torch.testing.assert_close(saved["model"][key], value, rtol=0, atol=0)
    torch.testing.assert_close(saved["optimiser"]["state"], expected["optimiser"]["state"], rtol=0, atol=0)
    torch.testing.assert_close(saved["rng"]["torch"], expected["rng"]["torch"], rtol=0, atol=0)


def _lstm(seed: int):
    torch.manual_seed(seed)
    return build_model("lstm", 4, 5, hidden=(16, 8), dropout=0.3)


def test_a_checkpoint_resumes_when_max_epochs_grew(make_separable_cases, tmp_path: Path) -> None:
    train, val, _, _ = _data(make_separable_cases, "radiomics")
    short = TrainSettings(lr=3e-3, batch_size=128, max_epochs=3, patience=10, seed=11)
    longer = TrainSettings(lr=3e-3, batch_size=128, max_epochs=6, patience=10, seed=11)
    checkpoint = tmp_path / "resumed" / "checkpoint.pt"

    first = fit(_lstm(0), train, val, short, checkpoint_path=checkpoint)
    assert first.epochs_run == 3 and not first.stopped_early
    resumed = _lstm(123)  # different initial weights: everything must come from the checkpoint
    resumed_result = fit(resumed, train, val, longer, checkpoint_path=checkpoint)
    assert resumed_result.resumed_from_epoch == 3 and resumed_result.epochs_run == 6

    fresh = _lstm(0)
    fresh_checkpoint = tmp_path / "fresh" / "checkpoint.pt"
    fresh_result = fit(fresh, train, val, longer, checkpoint_path=fresh_checkpoint)
    _assert_same_training(resumed, resumed_result, fresh, fresh_result, checkpoint, fresh_checkpoint)


def test_a_fold_that_stopped_early_continues_when_patience_grew(make_separable_cases, tmp_path: Path) -> None:
    train, val, _, _ = _data(make_separable_cases, "radiomics")
    # lr 3e-2 makes the validation loss rise for an epoch and then improve again: patience 1 stops at the rise.
    impatient = TrainSettings(lr=3e-2, batch_size=128, max_epochs=10, patience=1, seed=11)
    patient = TrainSettings(lr=3e-2, batch_size=128, max_epochs=10, patience=3, seed=11)
    checkpoint = tmp_path / "resumed" / "checkpoint.pt"

    first = fit(_lstm(0), train, val, impatient, checkpoint_path=checkpoint)
    assert first.stopped_early and first.epochs_run < impatient.max_epochs
    # same settings: the checkpoint is a finished fold, nothing more is trained
    again = fit(_lstm(123), train, val, impatient, checkpoint_path=checkpoint)
    assert again.stopped_early and again.epochs_run == first.epochs_run == again.resumed_from_epoch
    assert _without_seconds(again.history) == _without_seconds(first.history)

    resumed = _lstm(123)
    resumed_result = fit(resumed, train, val, patient, checkpoint_path=checkpoint)
    assert resumed_result.resumed_from_epoch == first.epochs_run
    assert resumed_result.epochs_run > first.epochs_run
    fresh = _lstm(0)
    fresh_checkpoint = tmp_path / "fresh" / "checkpoint.pt"
    fresh_result = fit(fresh, train, val, patient, checkpoint_path=fresh_checkpoint)
    assert fresh_result.best_epoch > first.best_epoch  # the extra patience found a better epoch
    _assert_same_training(resumed, resumed_result, fresh, fresh_result, checkpoint, fresh_checkpoint)


def test_a_checkpoint_trained_further_than_the_new_settings_is_an_error(make_separable_cases, tmp_path: Path) -> None:
    train, val, _, _ = _data(make_separable_cases, "radiomics")
    settings = TrainSettings(lr=3e-3, batch_size=128, max_epochs=3, patience=5, seed=11)
    checkpoint = tmp_path / "checkpoint.pt"
    fit(_lstm(0), train, val, settings, checkpoint_path=checkpoint)
    fewer_epochs = TrainSettings(lr=3e-3, batch_size=128, max_epochs=2, patience=5, seed=11)
    with pytest.raises(ArtifactError, match=r"trained further than the new settings allow \(max_epochs 3 -> 2\)"):
        fit(_lstm(0), train, val, fewer_epochs, checkpoint_path=checkpoint)
    less_patience = TrainSettings(lr=3e-3, batch_size=128, max_epochs=3, patience=4, seed=11)
    with pytest.raises(ArtifactError, match=r"patience 5 -> 4\).*delete the checkpoint"):
        fit(_lstm(0), train, val, less_patience, checkpoint_path=checkpoint)


def test_the_loss_ignores_nan_targets_and_counts_only_scored_voxels() -> None:
    """A NaN target marks a voxel outside the analysed lung (volume networks): the loss and its gradient come from
    the other voxels only, and the mean divides by their number."""
    from vent.models.training import MaskedLoss, _n_targets

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 4, 4, 4, requires_grad=True)
    target = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    scored = torch.rand(2, 1, 4, 4, 4) > 0.3
    masked = torch.where(scored, target, torch.full_like(target, float("nan")))
    loss = MaskedLoss("bce", None, "mean", torch.device("cpu"))(logits, masked)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[scored], target[scored])
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.count_nonzero(logits.grad[~scored]) == 0 and torch.count_nonzero(logits.grad[scored]) > 0
    assert _n_targets(masked) == int(scored.sum())
    mse = MaskedLoss("mse", None, "sum", torch.device("cpu"))(logits.detach(), masked)
    assert torch.allclose(mse, ((torch.sigmoid(logits.detach()) - target)[scored] ** 2).sum())


def test_mse_loss_settings_are_checked_and_a_checkpoint_keeps_its_loss(tmp_path, make_separable_cases) -> None:
    with pytest.raises(ConfigError, match="pos_weight"):
        TrainSettings(loss="mse", pos_weight=2.0)
    with pytest.raises(ConfigError, match="loss must be"):
        TrainSettings(loss="l1")
    train, val, _, _ = _data(make_separable_cases, "radiomics")
    torch.manual_seed(0)
    checkpoint = tmp_path / "checkpoint.pt"
    fit(build_model("lstm", 4, 5, hidden=(4,)), train, val, TrainSettings(max_epochs=1, device="cpu"),
        checkpoint_path=checkpoint)
    with pytest.raises(ArtifactError, match="loss"):
        fit(build_model("lstm", 4, 5, hidden=(4,)), train, val, TrainSettings(max_epochs=2, device="cpu", loss="mse"),
            checkpoint_path=checkpoint)
