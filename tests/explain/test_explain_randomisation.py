"""Model randomisation check on exactly the voxels of the trained map; explain's device is never a silent fallback."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from vent.errors import ConfigError
from vent.explain import explain_sample, model_randomisation_check, normalise_maps, randomisation_subset
from vent.stages.explain import resolve_explain_device


def test_same_model_on_the_same_voxels_gives_rho_one(planted):
    # A "random" model equal to the trained one must give rho = 1 when both maps cover the same voxels. The previous
    # check compared the subset's map with the trained map of all voxels, which is < 1 even for the same model.
    x = planted.x_test[:120]
    trained = explain_sample(planted.model, x, n_steps=50, keep_voxel_maps=True)
    check = model_randomisation_check(copy.deepcopy(planted.model), x, trained.voxel_maps, n_voxels=16, n_steps=50)
    assert check["spearman_trained_vs_random_map"] == pytest.approx(1.0, abs=1e-9)
    assert check["spearman_per_voxel_median"] == pytest.approx(1.0, abs=1e-9)
    index = np.asarray(check["voxel_index"])
    assert check["n_voxels"] == 16 and index[0] == 0 and index[-1] == 119  # spans the sample
    subset_mean = normalise_maps(trained.voxel_maps[index]).mean(axis=0)
    old_rho = spearmanr(trained.mean_map.ravel(), subset_mean.ravel()).statistic
    assert old_rho < 1.0 - 1e-3


def test_randomised_weights_change_the_map(planted, make_tiny_lstm):
    x = planted.x_test[:64]
    trained = explain_sample(planted.model, x, n_steps=50, keep_voxel_maps=True)
    check = model_randomisation_check(make_tiny_lstm(7), x, trained.voxel_maps, n_voxels=32, n_steps=50)
    assert check["spearman_trained_vs_random_map"] < 0.8
    assert check["random_delta"]["max_abs"] <= 1e-3 and check["warnings"] == []


def test_randomisation_subset():
    assert randomisation_subset(5, 64).tolist() == [0, 1, 2, 3, 4]
    assert randomisation_subset(100, 3).tolist() == [0, 50, 99]


def test_cuda_without_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expected = r"execution\.device is 'cuda'.*set execution\.device to 'auto'.*'cpu'"
    with pytest.raises(ConfigError, match=expected) as error:
        resolve_explain_device("cuda")
    assert "train.device" not in str(error.value)  # the key moved to the execution section
    assert resolve_explain_device("auto") == "cpu"
    assert resolve_explain_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_explain_device("auto") == "cuda"
