"""Fully convolutional networks (Long, Shelhamer, Darrell): FCN-32s, FCN-16s, FCN-8s.

Score layers are 1x1 convolutions on the stride-32, -16 and -8 taps; coarse scores are
upsampled by transposed convolutions initialised to bilinear interpolation and fused
with the finer skip scores by element-wise sum.  Skip score layers start at zero, as
in the paper, so training starts from the coarser net's prediction.
"""
from __future__ import annotations

import torch
from torch import nn

from fcn_perception.card import FCN_VARIANTS as VARIANTS
from fcn_perception.models.upsample import BilinearUpsample, crop_to


class FCN(nn.Module):
    """FCN head on a backbone exposing ``s8``/``s16``/``s32`` taps.

    Args:
        backbone: a module from :func:`fcn_perception.models.backbones.build_backbone`.
        num_classes: number of output classes ``C``.
        variant: ``"fcn32s"``, ``"fcn16s"`` or ``"fcn8s"``.

    Shapes:
        input ``(N, 3, H, W)`` normalised image, any ``H, W >= 1``;
        output ``(N, C, H, W)`` class scores (logits), aligned with the input.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, variant: str = "fcn8s") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown FCN variant {variant!r}; expected one of {sorted(VARIANTS)}")
        self.backbone = backbone
        self.variant = variant
        self.num_classes = num_classes
        ch, grid = backbone.channels, backbone.grid
        stride = VARIANTS[variant]
        self.score_s32 = nn.Conv2d(ch["s32"], num_classes, 1)
        if stride <= 16:
            self.score_s16 = self._zero_conv(ch["s16"], num_classes)
            self.up_s32 = BilinearUpsample(num_classes, 2, grid)
        if stride <= 8:
            self.score_s8 = self._zero_conv(ch["s8"], num_classes)
            self.up_s16 = BilinearUpsample(num_classes, 2, grid)
        self.up_final = BilinearUpsample(num_classes, stride, grid)

    @staticmethod
    def _zero_conv(cin: int, cout: int) -> nn.Conv2d:
        conv = nn.Conv2d(cin, cout, 1)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return conv

    def fused_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Skip-fused scores before the final upsampling: ``(N, C, ceil(H/s), ceil(W/s))``
        with ``s`` = 32, 16 or 8 for FCN-32s, -16s, -8s."""
        feats = self.backbone(x)
        score = self.score_s32(feats["s32"])
        if self.variant in ("fcn16s", "fcn8s"):
            skip = self.score_s16(feats["s16"])
            score = crop_to(self.up_s32(score), skip.shape[-2], skip.shape[-1]) + skip
        if self.variant == "fcn8s":
            skip = self.score_s8(feats["s8"])
            score = crop_to(self.up_s16(score), skip.shape[-2], skip.shape[-1]) + skip
        return score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return crop_to(self.up_final(self.fused_scores(x)), x.shape[-2], x.shape[-1])
