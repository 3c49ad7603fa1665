"""The staged data path (``vent.models.data.StagedBatches``): the same batches as the streamed path, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vent.models.data import StagedBatches, VoxelBatches, fit_standardiser, shuffled_epoch_order, staged_bytes


def _batches(paths, **options):
    standardiser = fit_standardiser(paths, [0, 2, 3], "radiomics")
    defaults = {"batch_size": 50, "shuffle": True, "seed": 3, "buffer_voxels": 130}
    return VoxelBatches(paths, [0, 2, 3], "radiomics", standardiser, **{**defaults, **options})


def _all(batches, epoch):
    batches.set_epoch(epoch)
    return [(x.numpy().copy(), y.numpy().copy()) for x, y in batches]


@pytest.mark.parametrize("budget", [10**9, 0], ids=["in_memory", "mapped_file"])
@pytest.mark.parametrize(
    "options", [{}, {"max_voxels_per_case": 170}, {"shuffle": False}], ids=["all", "sub", "ordered"]
)
def test_staged_batches_equal_streamed_batches_bit_for_bit(make_id_cases, tmp_path, budget, options) -> None:
    streamed = _batches(make_id_cases(n_cases=3, n_voxels=333, chunk_rows=64), **options)
    staged = StagedBatches(streamed, memory_budget_bytes=budget, spill_dir=tmp_path)
    assert staged.in_memory is (budget > 0)
    assert len(staged) == len(streamed) and staged.n_voxels == streamed.n_voxels
    for epoch in (0, 1, 5):
        expected, got = _all(streamed, epoch), _all(staged, epoch)
        assert len(expected) == len(got)
        for (ex, ey), (gx, gy) in zip(expected, got):
            assert ex.dtype == gx.dtype == np.float32
            assert np.array_equal(ex, gx) and np.array_equal(ey, gy)
    assert list(tmp_path.glob("staged-*")) == []  # the spill file is unlinked at once


def test_epoch_order_is_a_permutation_that_changes_with_the_epoch() -> None:
    sizes = [64, 64, 17, 64, 5]
    first = shuffled_epoch_order(sizes, 32, 100, seed=0, epoch=0)
    assert np.array_equal(np.sort(first), np.arange(sum(sizes)))
    assert not np.array_equal(first, shuffled_epoch_order(sizes, 32, 100, seed=0, epoch=1))
    assert np.array_equal(first, shuffled_epoch_order(sizes, 32, 100, seed=0, epoch=0))


def test_staged_training_gives_the_same_weights_and_outputs(make_separable_cases, tmp_path) -> None:
    """A tiny cohort trained through the streamed and the staged path (in RAM and mapped): identical model outputs."""
    from vent.models import build_model
    from vent.models.training import TrainSettings, fit, predict_proba

    train_paths, val_paths = make_separable_cases("train", 3), make_separable_cases("val", 1)
    standardiser = fit_standardiser(train_paths, [0, 1, 3], "radiomics")

    def make(paths, shuffle):
        return VoxelBatches(paths, [0, 1, 3], "radiomics", standardiser, batch_size=64, shuffle=shuffle, seed=1,
                            buffer_voxels=300)

    outputs = []
    for how in ("streamed", "in_memory", "mapped_file"):
        train, val = make(train_paths, True), make(val_paths, False)
        if how != "streamed":
            budget = 10**9 if how == "in_memory" else 0
            train, val = (StagedBatches(b, budget, spill_dir=tmp_path) for b in (train, val))
        torch.manual_seed(0)
        model = build_model("lstm", 3, 5, hidden=[8, 4])
        fit(model, train, val, TrainSettings(lr=1e-2, batch_size=64, max_epochs=3, patience=5, device="cpu"))
        outputs.append(predict_proba(model, make(val_paths, False), device="cpu"))
    assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[0], outputs[2])


def test_staged_bytes_is_the_float32_size(make_id_cases) -> None:
    batches = _batches(make_id_cases(n_cases=2, n_voxels=100))
    assert staged_bytes(batches) == 200 * 4 * 3 * 4
