"""The three volume networks of Table 2: 3D U-Net, U-Net++ and Res-UNet on the whole 4DCT, built from MONAI blocks.

Array layout: every network takes ``x`` of shape ``(B, T, Z, Y, X)`` float32 (the T breathing phases as channels,
normalised HU, see :mod:`vent.models.volume`) and returns ``(B, 1, Z, Y, X)`` **logits**; the defect probability is
``sigmoid(logit)``, applied at inference. Training uses ``BCEWithLogitsLoss``, numerically the study's sigmoid output
followed by binary cross-entropy. Spatial sides must be multiples of 16 (:data:`DEPTH` = 4 halvings); training
patches and sliding windows always are (``VolumeNetParams.patch_size``).

The study's text and what is built (``features`` = ``VolumeNetParams.features`` = (f0, f1, f2, f3, f4)):

- **3D U-Net** (:func:`build_unet`, ``monai.networks.nets.BasicUNet``). Study: four encoder blocks of two 3x3x3
  convolutions with ReLU followed by 2x2x2 max pooling, four decoder blocks of a 2x2x2 transposed convolution,
  concatenation with the encoder features and a conv block, a 1x1x1 convolution with sigmoid. BasicUNet is that
  network: two 3x3x3 convolutions at full resolution (f0), then four times 2x2x2 max pooling + two convolutions
  (f1..f4, the last the bottleneck at 1/16), four ``UpCat`` blocks (2x2x2 transposed convolution with stride 2,
  concatenation, two convolutions) and a 1x1x1 convolution. Differences: each convolution is followed by a
  normalisation layer (``norm``: instance with affine parameters by default, ``"batch"``, or ``"none"`` for the
  study's plain convolutions) and optional dropout; the transposed convolution halves the channels (MONAI's
  ``halves=True``) except at the top level; an odd side is replicate-padded after upsampling (never happens with
  multiples of 16).
- **3D U-Net++** (:func:`build_unetpp`, ``monai.networks.nets.BasicUNetPlusPlus``; Zhou et al., DLMIA 2018,
  arXiv:1807.10165). The same encoder as the U-Net; the decoder is the nested, densely connected grid of nodes
  x^{i,j} = H([x^{i,0}, ..., x^{i,j-1}, U(x^{i+1,j-1})]) (H: two 3x3x3 convolutions, U: 2x2x2 transposed
  convolution). Deep supervision is off: only the full-resolution output x^{0,4} is returned (MONAI returns a list;
  :class:`FullResolutionOutput` unwraps it). Same norm and dropout remarks as the U-Net.
- **3D Res-UNet** (:func:`build_resunet`, ``monai.networks.nets.UNet`` with ``num_res_units=2``, Kerfoot et al.,
  2018, then a 1x1x1 convolution). Every encoder level is a residual unit of two 3x3x3 convolutions whose first has
  stride 2, with a strided convolution on the skip path: **MONAI downsamples with strided convolutions, not max
  pooling**. Channels sit one level lower than in the U-Net: f0 is the width after the first downsampling (1/2), f3
  at 1/16, and f4 is a bottleneck residual unit at stride 1, so no convolution runs at full resolution before the
  first downsampling. Each decoder level is a 3x3x3 transposed convolution with stride 2 (not 2x2x2) followed by one
  residual unit. MONAI's top decoder level would emit the logit itself, through a one-channel transposed
  convolution with norm and ReLU (which zeroes half of it, and slowed learning markedly on the demo cohort); here it
  emits f0 channels and a 1x1x1 convolution gives the logit, as the study's head. ReLU activations as in the study
  (MONAI's default is PReLU); MONAI's UNet uses instance norm without affine parameters.

Every network carries ``spec`` when built through :func:`vent.models.build_model`, which rebuilds it from a saved
``model.pt``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["DEPTH", "FullResolutionOutput", "build_unet", "build_unetpp", "build_resunet", "count_downsamplings"]

DEPTH = 4
"""Halvings of the resolution from the input to the bottleneck (four encoder blocks): patches are multiples of 16."""

_ACTIVATION = ("relu", {"inplace": True})


def _norm(name: str, affine: bool = True) -> Any:
    """MONAI's norm argument for ``VolumeNetParams.norm``: instance (affine), batch, or None for no norm layer."""
    if name == "none":
        return None
    if name == "instance":
        return ("instance", {"affine": affine})
    return "batch"


def _basic_features(features: list[int]) -> tuple[int, ...]:
    """BasicUNet's six widths: the five levels, then the full-resolution width after the last upsampling (= f0)."""
    return (*[int(f) for f in features], int(features[0]))


class FullResolutionOutput(nn.Module):
    """A network returning a list of outputs (MONAI's U-Net++), reduced to its last, full-resolution one."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


def build_unet(n_inputs: int, n_steps: int, params: Any) -> nn.Module:
    """The study's 3D U-Net (module docstring): (B, n_inputs, Z, Y, X) -> (B, 1, Z, Y, X) logits.

    Args:
        n_inputs: Input channels: the number of breathing phases T.
        n_steps: Ignored (1): a volume network has no sequence axis.
        params: ``VolumeNetParams`` (features, norm, dropout).
    """
    from monai.networks.nets import BasicUNet

    del n_steps
    return BasicUNet(
        spatial_dims=3, in_channels=n_inputs, out_channels=1, features=_basic_features(params.features),
        act=_ACTIVATION, norm=_norm(params.norm), dropout=params.dropout, upsample="deconv",
    )


def build_unetpp(n_inputs: int, n_steps: int, params: Any) -> nn.Module:
    """The 3D U-Net++ (nested dense skip connections, module docstring), returning only its full-resolution output.

    Args: as :func:`build_unet`.
    """
    from monai.networks.nets import BasicUNetPlusPlus

    del n_steps
    net = BasicUNetPlusPlus(
        spatial_dims=3, in_channels=n_inputs, out_channels=1, features=_basic_features(params.features),
        deep_supervision=False, act=_ACTIVATION, norm=_norm(params.norm), dropout=params.dropout, upsample="deconv",
    )
    return FullResolutionOutput(net)


def build_resunet(n_inputs: int, n_steps: int, params: Any) -> nn.Module:
    """The 3D Res-UNet: MONAI's UNet with two-convolution residual units and four stride-2 levels, ending in f0
    channels at full resolution and a 1x1x1 convolution to the logit (module docstring).

    Args: as :func:`build_unet`.
    """
    from monai.networks.nets import UNet

    del n_steps
    features = [int(f) for f in params.features]
    body = UNet(
        spatial_dims=3, in_channels=n_inputs, out_channels=features[0], channels=features,
        strides=(2,) * DEPTH, num_res_units=2, act=_ACTIVATION, norm=_norm(params.norm, affine=False),
        dropout=params.dropout,
    )
    return nn.Sequential(body, nn.Conv3d(features[0], 1, kernel_size=1))


def count_downsamplings(model: nn.Module) -> int:
    """The resolution halvings on the encoder path: max-pooling layers plus strided (non-transposed) convolutions.

    A residual unit's strided skip projection (``.residual``) runs beside its main strided convolution, so it is not
    counted again. Equals :data:`DEPTH` for every network of this module.
    """
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.MaxPool3d):
            count += 1
        elif isinstance(module, nn.Conv3d) and not name.endswith("residual") and max(module.stride) > 1:
            count += 1
    return count
