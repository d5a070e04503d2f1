"""U-Net (Ronneberger et al. 2015): FCN's encoder-decoder successor.

Skips are concatenated (not summed) and the decoder has convolutions of its own.
Pooling uses ``ceil_mode`` and every up-convolution is cropped to its skip, so any
input size gives an output of exactly that size.
"""
from __future__ import annotations

import torch
from torch import nn

from fcn_perception.models.upsample import crop_to


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU blocks; ``(N, cin, h, w) -> (N, cout, h, w)``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` poolings and ``width`` channels at full resolution.

    Shapes: input ``(N, 3, H, W)`` -> logits ``(N, num_classes, H, W)``.
    """

    def __init__(self, num_classes: int, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.inc = double_conv(3, widths[0])
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.down = nn.ModuleList(double_conv(a, b) for a, b in zip(widths, widths[1:]))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths, widths[1:])
        )
        self.dec = nn.ModuleList(double_conv(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        y = skips.pop()
        for up, dec in zip(reversed(self.up), reversed(self.dec)):
            skip = skips.pop()
            y = crop_to(up(y), skip.shape[-2], skip.shape[-1])
            y = dec(torch.cat([skip, y], dim=1))
        return self.head(y)
