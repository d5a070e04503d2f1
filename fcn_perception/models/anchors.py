"""RPN anchors: ``len(sizes) * len(ratios)`` boxes centred on every feature-map cell.

Cell ``(i, j)`` of a stride-``s`` ResNet map is centred on input pixel ``(s*i, s*j)``
(the "corner" grid of :mod:`fcn_perception.models.upsample`), so anchors are centred
there.  Each anchor has area ``size**2`` and height/width ratio ``ratio``.  The order
is: cell-major (row, then column), then anchor (ratio-major, then size), matching the
channel order of the RPN's per-cell outputs reshaped as ``(N, A, H, W) -> (N, H*W*A)``
after a permute to ``(N, H, W, A)``.

Generation uses only tensor operations on the feature map's shape, so it traces into
an ONNX graph whose anchor count follows the input size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def cell_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> torch.Tensor:
    """The ``(A, 4)`` anchors centred at the origin, ``x1, y1, x2, y2``."""
    sizes_t = torch.as_tensor(sizes, dtype=torch.float32)
    ratios_t = torch.as_tensor(ratios, dtype=torch.float32)
    h_ratio = torch.sqrt(ratios_t)
    w_ratio = 1.0 / h_ratio
    ws = (w_ratio[:, None] * sizes_t[None, :]).reshape(-1)
    hs = (h_ratio[:, None] * sizes_t[None, :]).reshape(-1)
    return torch.stack([-ws, -hs, ws, hs], dim=1) / 2


class AnchorGenerator(nn.Module):
    """Anchors for a single feature map of stride ``stride``.

    Args:
        sizes: anchor side lengths (square-root of the area) in input pixels.
        ratios: height / width ratios.
        stride: feature-map stride in input pixels.
    """

    def __init__(self, sizes: Sequence[float] = (20, 50, 125),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0), stride: int = 16) -> None:
        super().__init__()
        self.sizes = tuple(float(s) for s in sizes)
        self.ratios = tuple(float(r) for r in ratios)
        self.stride = int(stride)
        self.register_buffer("base", cell_anchors(self.sizes, self.ratios), persistent=False)

    @property
    def num_anchors(self) -> int:
        return len(self.sizes) * len(self.ratios)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """``(H*W*A, 4)`` anchors for a feature map ``(N, C, H, W)``."""
        height, width = feature.shape[-2], feature.shape[-1]
        device = feature.device
        ys = torch.arange(height, dtype=torch.float32, device=device) * self.stride
        xs = torch.arange(width, dtype=torch.float32, device=device) * self.stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        cx, cy = cx.reshape(-1), cy.reshape(-1)
        shifts = torch.stack([cx, cy, cx, cy], dim=1)
        return (shifts[:, None, :] + self.base.to(device)[None, :, :]).reshape(-1, 4)
