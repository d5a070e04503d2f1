"""Exact graph rewrites that make the models faster to run (torch and exported ONNX).

:class:`SubpixelConvTranspose2d` computes exactly what a ``ConvTranspose2d`` computes
(any kernel, stride, padding, output padding; groups=1, dilation=1) as one ordinary
convolution producing ``stride**2`` phases per output channel, a pixel shuffle
(``DepthToSpace`` in ONNX) and a crop.  The FCN upsampling layers (kernel ``2s-1`` or
``2s``, stride ``s``) become 2x2 convolutions: a dense GEMM instead of a scatter-add
(``col2im``), several times faster on CPUs, with the same weights and the same output
up to float rounding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SubpixelConvTranspose2d(nn.Module):
    """The sub-pixel (phase) form of a ``ConvTranspose2d``; see the module docstring.

    For stride ``s``, kernel ``k``, padding ``p``: output pixel ``o`` with
    ``o + p = q*s + r`` receives ``sum_j in[q - j] * w[j*s + r]`` for ``j*s + r < k``,
    i.e. a ``J = ceil(k/s)``-tap convolution per phase ``r``.
    """

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        if deconv.groups != 1 or tuple(deconv.dilation) != (1, 1):
            raise ValueError("only groups=1, dilation=1 transposed convolutions are rewritten")
        if deconv.stride[0] != deconv.stride[1]:
            raise ValueError("pixel shuffle needs equal strides")
        cin, cout, kh, kw = deconv.weight.shape
        (sh, sw), (ph, pw) = tuple(deconv.stride), tuple(deconv.padding)
        oph, opw = tuple(deconv.output_padding)
        jh, jw = math.ceil(kh / sh), math.ceil(kw / sw)
        w = deconv.weight.detach()
        g = w.new_zeros(cout, sh, sw, cin, jh, jw)
        for ry in range(sh):
            for uy in range(jh):
                ty = (jh - 1 - uy) * sh + ry
                if ty >= kh:
                    continue
                for rx in range(sw):
                    for ux in range(jw):
                        tx = (jw - 1 - ux) * sw + rx
                        if tx < kw:
                            g[:, ry, rx, :, uy, ux] = w[:, :, ty, tx].t()
        self.conv = nn.Conv2d(cin, cout * sh * sw, (jh, jw), bias=deconv.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(g.reshape(cout * sh * sw, cin, jh, jw))
            if deconv.bias is not None:
                self.conv.bias.copy_(deconv.bias.detach().repeat_interleave(sh * sw))
        self.scale = sh
        # phases needed to cover [p, p + out) beyond the input's n: R = ceil((k+op-p)/s) - 1;
        # what is left after the crop is a constant, so no shape arithmetic is traced
        rh = max(0, math.ceil((kh + oph - ph) / sh) - 1)
        rw = max(0, math.ceil((kw + opw - pw) / sw) - 1)
        self.padding = (jw - 1, rw, jh - 1, rh)
        self.crop = (ph, (rh + 1) * sh + ph - kh - oph, pw, (rw + 1) * sw + pw - kw - opw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pixel_shuffle(self.conv(F.pad(x, self.padding)), self.scale)
        top, bottom, left, right = self.crop
        return y[:, :, top:(-bottom or None), left:(-right or None)]


def replace_transposed_convs(model: nn.Module) -> int:
    """Swap every eligible ``ConvTranspose2d`` in ``model`` for its sub-pixel form, in place."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.ConvTranspose2d) and child.groups == 1
                    and tuple(child.dilation) == (1, 1) and child.stride[0] == child.stride[1]):
                setattr(parent, name, SubpixelConvTranspose2d(child))
                count += 1
    return count


class FCNLabels(nn.Module):
    """``image -> labels (N, H, W) uint8`` for an :class:`~fcn_perception.models.fcn.FCN`,
    with the argmax moved before the pixel shuffle of the final upsampling.

    The final sub-pixel convolution gives ``C x s^2`` phase maps; the argmax over the
    ``C`` classes of each phase, then the interleaving of the ``s^2`` phases (uint8, one
    channel), equals interleaving the ``C``-channel scores first and taking the argmax
    then (the same values are compared, in the same class order, so even ties agree) -- at
    ``1/C`` of the memory traffic.  Exact; requires ``up_final`` to be a
    :class:`SubpixelConvTranspose2d` (see :func:`replace_transposed_convs`).

    With ``confidence`` (or ``forward(image, confidence=True)``) it also returns the top
    class's softmax probability per pixel, ``1 / sum_c exp(s_c - max_c s_c)``, computed on
    the same phase maps (the same values, so exact too): ``(labels, confidence)``.
    """

    def __init__(self, fcn: nn.Module, confidence: bool = False) -> None:
        super().__init__()
        if not isinstance(getattr(fcn, "up_final", None), SubpixelConvTranspose2d):
            raise ValueError("FCNLabels needs an FCN whose up_final was rewritten")
        self.fcn = fcn.eval()
        self.confidence = confidence

    def forward(self, image: torch.Tensor, confidence: bool | None = None):
        fcn = self.fcn
        height, width = image.shape[-2], image.shape[-1]
        score = fcn.fused_scores(image)
        up = fcn.up_final
        s = up.scale
        phases = up.conv(F.pad(score, up.padding))  # (N, C*s*s, h, w), channel c*s*s + ry*s + rx
        n, _, h, w = phases.shape
        top, left = up.crop[0], up.crop[2]

        def interleave(per_phase: torch.Tensor) -> torch.Tensor:  # (N, s*s, h, w) -> (N, H, W)
            full = per_phase.reshape(n, s, s, h, w).permute(0, 3, 1, 4, 2).reshape(n, h * s, w * s)
            return full[:, top:top + height, left:left + width]

        classes = phases.reshape(n, fcn.num_classes, s * s, h, w)
        labels = interleave(classes.argmax(1).to(torch.uint8))
        if not (self.confidence if confidence is None else confidence):
            return labels
        return labels, interleave(top_probability(classes.float()))


def top_probability(scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The largest softmax probability along ``dim``: ``1 / sum exp(s - max s)``."""
    best = scores.amax(dim, keepdim=True)
    return torch.reciprocal(torch.exp(scores - best).sum(dim))
