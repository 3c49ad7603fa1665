"""The volume networks (vent.models.volume_networks): shapes, depth, activations and norms, built via the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vent.errors import ConfigError
from vent.models import build_model
from vent.models.volume_networks import DEPTH, count_downsamplings

NETWORKS = ["unet", "unetpp", "resunet"]
SMALL = {"features": [4, 4, 8, 8, 16], "patch_size": [32, 32, 32]}


@pytest.mark.parametrize("name", NETWORKS)
def test_a_network_maps_phases_as_channels_to_one_logit_per_voxel(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 3, 1, **SMALL)
    out = model(torch.randn(2, 3, 32, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 32, 32, 32)
    assert model.spec["name"] == name and model.spec["n_inputs"] == 3 and model.spec["n_steps"] == 1
    assert model.spec["params"]["features"] == SMALL["features"]


@pytest.mark.parametrize("name", NETWORKS)
def test_every_network_halves_the_resolution_four_times(name: str) -> None:
    """Four pooling / strided layers, and the smallest feature map is the input / 2^4."""
    model = build_model(name, 2, 1, **SMALL)
    assert DEPTH == 4 and count_downsamplings(model) == DEPTH
    sides: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sides.append(out.shape[-1]))
             for m in model.modules() if isinstance(m, (nn.Conv3d, nn.MaxPool3d))]
    model(torch.randn(1, 2, 32, 32, 32))
    for hook in hooks:
        hook.remove()
    assert min(sides) == 32 // 2**DEPTH


@pytest.mark.parametrize("name", NETWORKS)
def test_activations_are_relu_and_norm_none_leaves_no_norm_layer(name: str) -> None:
    plain = build_model(name, 2, 1, **SMALL, norm="none")
    kinds = {type(m) for m in plain.modules()}
    assert nn.ReLU in kinds and not kinds & {nn.PReLU, nn.LeakyReLU}
    assert not kinds & {nn.InstanceNorm3d, nn.BatchNorm3d}
    assert nn.InstanceNorm3d in {type(m) for m in build_model(name, 2, 1, **SMALL).modules()}
    assert nn.BatchNorm3d in {type(m) for m in build_model(name, 2, 1, **SMALL, norm="batch").modules()}


def test_a_patch_that_leaves_a_one_voxel_bottleneck_cannot_use_instance_norm() -> None:
    with pytest.raises(ConfigError, match="bottleneck"):
        build_model("unet", 2, 1, patch_size=[16, 16, 16])
    with pytest.raises(ConfigError, match="multiple of 16"):
        build_model("unet", 2, 1, patch_size=[24, 32, 32])
    assert build_model("unet", 2, 1, features=[2, 2, 2, 2, 2], patch_size=[16, 16, 16], norm="none") is not None
