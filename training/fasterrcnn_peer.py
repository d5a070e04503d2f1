"""The detection peer of the README's comparison: torchvision's Faster R-CNN with an FPN
on the same ImageNet EfficientNet-Lite0 backbone as R-FCN.

Backbone taps ``s8``/``s16``/``s32`` (40/112/1280 ch) -> a 96-channel
:class:`torchvision.ops.FeaturePyramidNetwork` plus a max-pool level; anchors 16, 32,
64 and 128 px (one size per level) x height/width ratios 0.5, 1, 2; RoIAlign 7x7 over
the three tapped levels; the two-layer MLP box head of torchvision.  Its internal
transform keeps the input size (:class:`KeepSizeTransform`): the data pipeline does any
resizing, as for R-FCN, so both see the same pixels in training and evaluation.  It normalises internally (ImageNet mean/std), so it is
fed ``[0, 1]`` images.  Not part of the robot runtime (it lives with training); trained
by :mod:`fcn_perception.training.peer_fasterrcnn` and timed by
``benchmarks/bench_cpu.py``.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from fcn_perception.models.efficientnet_lite import EfficientNetLite

NAME = "Faster R-CNN FPN EfficientNet-Lite0"
LEVELS = ("s8", "s16", "s32")
# proposals: torchvision's train/test counts scaled to a 3-class road scene
BUDGET = {"rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 300,
          "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 150,
          "box_batch_size_per_image": 256}


class LiteFPN(nn.Module):
    """EfficientNet-Lite taps -> FPN: ``(N, 3, H, W)`` -> ``{"s8", "s16", "s32", "pool"}``,
    each ``(N, out_channels, h, w)``."""

    def __init__(self, pretrained: str | Path | None = None, out_channels: int = 96) -> None:
        super().__init__()
        self.body = EfficientNetLite("efficientnet_lite0", pretrained)
        self.fpn = FeaturePyramidNetwork([self.body.channels[k] for k in LEVELS], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict:
        taps = self.body(x)
        return self.fpn(OrderedDict((k, taps[k]) for k in LEVELS))


class KeepSizeTransform(GeneralizedRCNNTransform):
    """torchvision's normalise-and-batch transform without its resize: images keep the
    size they come with (native frames, or the training scale jitter's)."""

    def resize(self, image: torch.Tensor, target: dict | None = None):
        return image, target


def build_fasterrcnn_peer(num_classes: int, pretrained: str | Path | None = None) -> FasterRCNN:
    """The peer for ``num_classes`` foreground classes (torchvision labels ``1..C``)."""
    anchors = AnchorGenerator(sizes=((16,), (32,), (64,), (128,)),
                              aspect_ratios=((0.5, 1.0, 2.0),) * 4)
    model = FasterRCNN(LiteFPN(pretrained), num_classes=num_classes + 1,
                       rpn_anchor_generator=anchors,
                       box_roi_pool=MultiScaleRoIAlign(list(LEVELS), 7, 2), **BUDGET)
    t = model.transform
    model.transform = KeepSizeTransform(t.min_size, t.max_size, t.image_mean, t.image_std)
    return model
