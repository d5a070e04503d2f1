"""Learnable upsampling initialised to bilinear interpolation.

FCN upsamples coarse score maps with transposed convolutions whose weights start as
bilinear interpolation kernels and are then learned (Long et al., Sec. 3.3).

Two grid conventions occur in the backbones used here:

* ``"center"`` (VGG16, 2x2 max pooling): cell ``j`` of a stride-``s`` map covers input
  pixels ``[s*j, s*j + s)``, centred at ``s*j + (s-1)/2``.  The paper's kernel of size
  ``2s`` with padding ``s/2`` is exactly aligned.
* ``"corner"`` (ResNet, 3x3 and 7x7 stride-2 convolutions with "same" padding): cell
  ``j`` is centred on input pixel ``s*j``.  A kernel of size ``2s-1`` with padding
  ``s-1`` (and output padding ``s-1``) is exactly aligned and equals
  ``F.interpolate(..., align_corners=True)`` on the grid ``s*j``.

Either way the output has ``s * in`` cells; callers crop it to the size they need.
"""
from __future__ import annotations

import torch
from torch import nn


def bilinear_kernel(size: int, center: float, factor: int) -> torch.Tensor:
    """1-D bilinear (tent) weights of length ``size`` centred at ``center``."""
    pos = torch.arange(size, dtype=torch.float64)
    return (1.0 - (pos - center).abs() / factor).clamp(min=0.0)


class BilinearUpsample(nn.ConvTranspose2d):
    """Transposed convolution upsampling by ``factor``, bilinear at init.

    The kernel is a full ``C x C`` kernel (as in FCN), initialised to per-channel
    bilinear interpolation with zero cross-channel terms; all of it is learnable.

    Args:
        channels: number of score channels (input = output channels).
        factor: integer stride ``s``.
        grid: ``"center"`` or ``"corner"`` (see module docstring).

    Shapes:
        input ``(N, C, h, w)`` -> output ``(N, C, s*h, s*w)``.
    """

    def __init__(self, channels: int, factor: int, grid: str = "corner") -> None:
        if grid == "center":
            kernel, padding, out_pad = 2 * factor, factor // 2, 0
            center = factor - 0.5
            if factor % 2:
                raise ValueError("grid='center' needs an even factor")
        elif grid == "corner":
            kernel, padding, out_pad = 2 * factor - 1, factor - 1, factor - 1
            center = factor - 1.0
        else:
            raise ValueError(f"grid must be 'center' or 'corner', got {grid!r}")
        super().__init__(
            channels, channels, kernel, stride=factor, padding=padding,
            output_padding=out_pad, bias=False,
        )
        self.factor = factor
        self.grid = grid
        k1 = bilinear_kernel(kernel, center, factor)
        k2 = (k1[:, None] * k1[None, :]).to(torch.float32)
        with torch.no_grad():
            self.weight.zero_()
            for c in range(channels):
                self.weight[c, c] = k2


def crop_to(x: torch.Tensor, height, width) -> torch.Tensor:
    """Crop ``(N, C, H', W')`` to its top-left ``(height, width)`` window."""
    return x[:, :, :height, :width]
