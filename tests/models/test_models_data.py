"""Tests of the streaming voxel batches and the standardiser (vent.models.data)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from vent.errors import ArtifactError, ConfigError, DataError
from vent.models.data import Standardiser, VoxelBatches, fit_standardiser, merge_moments


def _ids_of(batches: VoxelBatches) -> np.ndarray:
    """Voxel ids (feature 0 at phase 0) yielded in one epoch, without standardisation."""
    return np.concatenate([x[:, 0, 0].numpy() for x, _ in batches]).astype(np.int64)


def _all_ids(paths: list[Path]) -> np.ndarray:
    ids = []
    for path in paths:
        with h5py.File(path, "r") as h5:
            ids.append(h5["features"][:, 0, 0].astype(np.int64))
    return np.concatenate(ids)


def test_shuffled_epoch_yields_every_voxel_exactly_once(make_id_cases) -> None:
    paths = make_id_cases(n_cases=3, n_voxels=500)
    batches = VoxelBatches(paths, None, "radiomics", None, batch_size=64, shuffle=True, seed=3, buffer_voxels=200)
    expected = np.sort(_all_ids(paths))
    epoch0 = _ids_of(batches)
    assert epoch0.size == expected.size == 1500
    np.testing.assert_array_equal(np.sort(epoch0), expected)
    assert len(batches) == sum(1 for _ in batches) == int(np.ceil(1500 / 64))
    # Same epoch -> same order; another epoch -> another order, still a permutation.
    np.testing.assert_array_equal(_ids_of(batches), epoch0)
    batches.set_epoch(1)
    epoch1 = _ids_of(batches)
    np.testing.assert_array_equal(np.sort(epoch1), expected)
    assert not np.array_equal(epoch1, epoch0)
    # Batches mix patients (case = id // 100000): the first batch is not from a single patient.
    first_batch_cases = np.unique(epoch0[:64] // 100000)
    assert first_batch_cases.size > 1


def test_unshuffled_batches_keep_file_order_and_labels(make_id_cases) -> None:
    paths = make_id_cases(n_cases=2, n_voxels=150)
    batches = VoxelBatches(paths, None, "radiomics", None, batch_size=64, shuffle=False)
    ids = _ids_of(batches)
    np.testing.assert_array_equal(ids, _all_ids(paths))
    sizes = [x.shape[0] for x, _ in batches]
    assert sizes == [64, 64, 64, 64, 44]
    labels = np.concatenate([y.numpy() for _, y in batches])
    with h5py.File(paths[0], "r") as a, h5py.File(paths[1], "r") as b:
        expected_labels = np.concatenate([a["labels"][()], b["labels"][()]])
    np.testing.assert_array_equal(labels, expected_labels)
    assert batches.case_voxel_counts == [150, 150]
    n_negative, n_positive = batches.label_counts()
    assert n_positive == int(expected_labels.sum()) and n_negative + n_positive == 300


def test_feature_selection_and_raw_input(make_id_cases) -> None:
    paths = make_id_cases(n_cases=1, n_voxels=100, n_steps=4, n_features=6)
    with h5py.File(paths[0], "r") as h5:
        features = h5["features"][()]
        intensity = h5["intensity"][()]
    selected = VoxelBatches(paths, [5, 2, 0], "radiomics", None, batch_size=100)
    x, y = next(iter(selected))
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert tuple(x.shape) == (100, 4, 3)
    np.testing.assert_array_equal(x.numpy(), features[:, :, [5, 2, 0]])
    raw = VoxelBatches(paths, [5, 2], "raw", None, batch_size=100)
    x_raw, _ = next(iter(raw))
    assert tuple(x_raw.shape) == (100, 4, 1) and raw.n_inputs == 1
    np.testing.assert_array_equal(x_raw.numpy()[:, :, 0], intensity)


def test_subsample_is_stratified_fixed_and_unique(make_id_cases) -> None:
    paths = make_id_cases(n_cases=3, n_voxels=500)
    batches = VoxelBatches(paths, None, "radiomics", None, batch_size=32, shuffle=True, seed=7,
                           max_voxels_per_case=100)
    assert batches.case_voxel_counts == [100, 100, 100]
    epoch0 = _ids_of(batches)
    batches.set_epoch(5)
    epoch5 = _ids_of(batches)
    assert np.unique(epoch0).size == 300
    np.testing.assert_array_equal(np.sort(epoch0), np.sort(epoch5))
    for case, path in enumerate(paths):
        with h5py.File(path, "r") as h5:
            labels = h5["labels"][()]
        chosen = batches.voxel_indices(case)
        np.testing.assert_array_equal(np.sort(epoch0[epoch0 // 100000 == case] % 100000), chosen)
        assert abs(labels[chosen].mean() - labels.mean()) <= 0.011  # rounding of 100 * fraction
    other_seed = VoxelBatches(paths, None, "radiomics", None, batch_size=32, seed=8, max_voxels_per_case=100)
    assert not np.array_equal(other_seed.voxel_indices(0), batches.voxel_indices(0))


def test_buffer_size_not_patient_count_bounds_memory(make_id_cases) -> None:
    paths = make_id_cases(n_cases=8, n_voxels=640, chunk_rows=64)
    peaks = {}
    for n_cases in (2, 8):
        batches = VoxelBatches(paths[:n_cases], None, "radiomics", None, batch_size=50, shuffle=True,
                               buffer_voxels=256)
        n_seen = sum(y.shape[0] for _, y in batches)
        assert n_seen == 640 * n_cases
        peaks[n_cases] = batches.peak_buffered_voxels_
    # The buffer fills to >= 256 voxels, keeps < 50 carried over and adds at most one 64-row block.
    assert all(256 <= peak <= 256 + 50 + 64 for peak in peaks.values())
    assert peaks[8] <= 256 + 50 + 64 < 640 * 8


def test_standardiser_uses_training_files_only(make_id_cases, tmp_path: Path) -> None:
    paths = make_id_cases(n_cases=3, n_voxels=300, n_features=5)
    train, held_out = paths[:2], paths[2]
    with h5py.File(held_out, "r+") as h5:  # make the held-out patient very different
        h5["features"][:, :, 1:] = h5["features"][:, :, 1:] * 10.0 + 50.0
    standardiser = fit_standardiser(train, [1, 3, 4], "radiomics")
    values = []
    for path in train:
        with h5py.File(path, "r") as h5:
            values.append(h5["features"][:, :, [1, 3, 4]].reshape(-1, 3))
    pooled = np.concatenate(values).astype(np.float64)
    np.testing.assert_allclose(standardiser.mean, pooled.mean(axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(standardiser.std, pooled.std(axis=0), rtol=1e-9)
    assert standardiser.n_values == pooled.shape[0]
    everything = fit_standardiser(paths, [1, 3, 4], "radiomics")
    assert np.all(np.abs(everything.mean - standardiser.mean) > 1.0)
    # Batches of the training files come out with mean 0 and std 1 per feature.
    batches = VoxelBatches(train, [1, 3, 4], "radiomics", standardiser, batch_size=128, shuffle=True)
    standardised = torch.cat([x for x, _ in batches]).reshape(-1, 3).double()
    torch.testing.assert_close(standardised.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardised.std(0, correction=0), torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)
    # Round trip through JSON.
    restored = Standardiser.from_dict(json.loads(json.dumps(standardiser.to_dict())))
    np.testing.assert_array_equal(restored.mean, standardiser.mean)
    np.testing.assert_array_equal(restored.std, standardiser.std)
    assert restored.feature_index == [1, 3, 4]


def test_subsampled_standardiser_matches_the_subsample(make_id_cases) -> None:
    paths = make_id_cases(n_cases=2, n_voxels=400, n_features=4)
    standardiser = fit_standardiser(paths, [2], "radiomics", max_voxels_per_case=50, seed=4)
    batches = VoxelBatches(paths, [2], "radiomics", None, batch_size=1000, seed=4, max_voxels_per_case=50)
    x = torch.cat([x for x, _ in batches]).numpy().reshape(-1).astype(np.float64)
    assert x.size == 2 * 50 * 4
    assert standardiser.mean[0] == pytest.approx(x.mean(), abs=1e-9)
    assert standardiser.std[0] == pytest.approx(x.std(), rel=1e-9)


def test_merge_moments_equals_numpy_on_the_union() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(3.0, 2.0, size=(70, 2)), rng.normal(-1.0, 0.5, size=(30, 2))
    n, mean, m2 = merge_moments(70, a.mean(0), ((a - a.mean(0)) ** 2).sum(0), 30, b.mean(0),
                                ((b - b.mean(0)) ** 2).sum(0))
    union = np.concatenate([a, b])
    assert n == 100
    np.testing.assert_allclose(mean, union.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m2 / n, union.var(0), rtol=1e-12)


def test_bad_inputs_raise_clear_errors(make_id_cases, tmp_path: Path) -> None:
    paths = make_id_cases(n_cases=2, n_voxels=100, n_features=6)
    with pytest.raises(ArtifactError, match="does not exist"):
        VoxelBatches([tmp_path / "nope.h5"], None, "radiomics", None)
    with pytest.raises(ConfigError, match="out of range"):
        VoxelBatches(paths, [0, 6], "radiomics", None)
    with pytest.raises(ConfigError, match="input_kind"):
        VoxelBatches(paths, None, "ct", None)
    with pytest.raises(ConfigError, match="standardiser has 2 features"):
        VoxelBatches(paths, [0, 1, 2], "radiomics", Standardiser(np.zeros(2), np.ones(2)))
    with h5py.File(tmp_path / "bad_t.h5", "w") as h5:
        h5["features"] = np.zeros((10, 3, 6), np.float32)
        h5["labels"] = np.zeros(10, np.uint8)
    with pytest.raises(ArtifactError, match="share T and F"):
        VoxelBatches([paths[0], tmp_path / "bad_t.h5"], None, "radiomics", None)
    with h5py.File(tmp_path / "no_labels.h5", "w") as h5:
        h5["features"] = np.zeros((10, 4, 6), np.float32)
    with pytest.raises(ArtifactError, match="no /labels"):
        VoxelBatches([tmp_path / "no_labels.h5"], None, "radiomics", None)
    with h5py.File(paths[1], "r+") as h5:
        h5["features"][7, 2, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        list(VoxelBatches(paths, None, "radiomics", None, batch_size=32))


def test_edge_channels_are_appended_after_the_features(tmp_path):
    """The lung-edge sequences (/edge, written by the io writer) come after the selected features, in order."""
    from vent.io.artifacts import create_radiomics_case, write_radiomics_voxel_data
    from vent.models.data import VoxelBatches, edge_channel_index, read_voxel_inputs

    rng = np.random.default_rng(0)
    n, t, f = 300, 4, 5
    features = rng.normal(size=(n, t, f)).astype(np.float32)
    edge = rng.normal(size=(n, t, 3)).astype(np.float32)
    labels = (rng.random(n) < 0.3).astype(np.uint8)
    path = tmp_path / "case.h5"
    with h5py.File(path, "w") as handle:
        create_radiomics_case(handle, n, t, [f"f{i}" for i in range(f)], [""] * f, {"case_id": "case"})[...] = features
        write_radiomics_voxel_data(handle, features[:, :, 0], labels, np.zeros(n), np.zeros((n, 3)), edge_ntc=edge)
    index = edge_channel_index(path, ["kernel_lung_fraction", "inside"])
    assert index == [2, 0]
    batches = VoxelBatches([path], [1, 3], "radiomics", None, batch_size=1000, edge_index=index)
    assert batches.n_inputs == 4
    x, _ = next(iter(batches))
    np.testing.assert_array_equal(x.numpy()[:, :, :2], features[:, :, [1, 3]])
    np.testing.assert_array_equal(x.numpy()[:, :, 2:], edge[:, :, [2, 0]])
    rows = np.array([5, 17, 250])
    np.testing.assert_array_equal(read_voxel_inputs(path, rows, "radiomics", [1, 3], index), x.numpy()[rows])
    raw = read_voxel_inputs(path, rows, "raw", None, [1])
    np.testing.assert_array_equal(raw[:, :, 0], features[rows, :, 0])
    np.testing.assert_array_equal(raw[:, :, 1], edge[rows][:, :, 1])


def test_edge_inputs_need_the_edge_dataset(tmp_path):
    from vent.errors import ArtifactError
    from vent.models.data import edge_channel_index

    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as handle:  # a radiomics file written before /edge existed
        handle.create_dataset("features", data=np.zeros((10, 3, 2), np.float32))
    assert edge_channel_index(path, []) is None
    with pytest.raises(ArtifactError, match="re-run the radiomics stage"):
        edge_channel_index(path, ["inside"])
