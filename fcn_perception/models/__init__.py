"""Models: FCN-32s/16s/8s (VGG16, ResNet, EfficientNet-Lite), U-Net and R-FCN.

:func:`build_model` turns a model card's ``architecture`` dict into a module.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from fcn_perception.card import ARCHITECTURES, BACKBONES
from fcn_perception.models.backbones import build_backbone
from fcn_perception.models.fcn import FCN, VARIANTS
from fcn_perception.models.unet import UNet

SEGMENTATION_ARCHS = ARCHITECTURES["segmentation"]  # training's --arch choices


def build_model(arch: dict, pretrained_backbone: str | Path | None = None) -> nn.Module:
    """Build a model from an architecture dict.

    Segmentation: ``{"name": "fcn8s"|"fcn16s"|"fcn32s", "backbone": ..., "num_classes": C}``
    or ``{"name": "unet", "num_classes": C, "width": 32}``.
    Detection: ``{"name": "rfcn", "backbone": ..., "num_classes": C, ...}`` (foreground
    classes; see :mod:`fcn_perception.models.rfcn`).
    """
    name = arch.get("name")
    if name in VARIANTS:
        backbone = build_backbone(arch.get("backbone", "resnet18"), pretrained_backbone)
        return FCN(backbone, int(arch["num_classes"]), name)
    if name == "unet":
        return UNet(int(arch["num_classes"]), int(arch.get("width", 32)))
    if name == "rfcn":
        from fcn_perception.models.rfcn import build_rfcn

        return build_rfcn(arch, pretrained_backbone)
    raise ValueError(
        f"unknown architecture {name!r}; expected one of "
        f"{(*ARCHITECTURES['segmentation'], *ARCHITECTURES['detection'])} with a backbone "
        f"from {BACKBONES}"
    )
