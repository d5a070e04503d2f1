"""Joint image/label augmentation with ``torchvision.transforms.v2``.

Images are ``tv_tensors.Image`` (uint8 ``(3, H, W)``) and labels ``tv_tensors.Mask``
(``(H, W)``), so geometric transforms move both together (nearest-neighbour for the
mask) and photometric ones touch only the image.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


def to_tv(image: np.ndarray, label: np.ndarray):
    """``(H, W, 3)`` uint8 and ``(H, W)`` uint8 numpy -> tv_tensors Image and Mask."""
    img = tv_tensors.Image(torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1))
    mask = tv_tensors.Mask(torch.from_numpy(np.array(label, copy=True)).long())
    return img, mask


PHOTOMETRIC = ("jitter", "strong")
"""Photometric augmentation levels: ``jitter`` is colour jitter only; ``strong`` adds
Gaussian blur, a random gamma (dusk and glare: 0001TP is filmed at dusk) and sensor noise."""


class SegmentationTransform:
    """Training or evaluation transform: ``(image, label) -> (float (3,H,W), long (H,W))``.

    Training: random scale (``scale_range`` of the original size), random crop to
    ``crop`` (padding with ``ignore_index`` where the scaled image is smaller), random
    horizontal flip, colour jitter (and with ``photometric="strong"`` blur, gamma and
    noise); then normalisation with ``mean``/``std``.
    Evaluation: normalisation only, at full resolution.
    """

    def __init__(self, train: bool, mean, std, crop=(288, 384), scale_range=(0.75, 1.5),
                 ignore_index: int = 11, jitter: float = 0.3,
                 photometric: str = "jitter") -> None:
        if photometric not in PHOTOMETRIC:
            raise ValueError(f"photometric must be one of {PHOTOMETRIC}, got {photometric!r}")
        ops, after_float = [], []
        if train:
            ops += [
                _RandomScale(scale_range),
                v2.RandomCrop(crop, pad_if_needed=True,
                              fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=0.03),
            ]
            if photometric == "strong":
                ops += [v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.3)]
                after_float += [_RandomGamma((0.6, 1.6), p=0.5),
                                v2.RandomApply([v2.GaussianNoise(sigma=0.03)], p=0.3)]
        ops += [v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64},
                           scale=True),
                *after_float,
                v2.Normalize(mean=list(mean), std=list(std))]
        self.ops = v2.Compose(ops)

    def __call__(self, image: np.ndarray, label: np.ndarray):
        img, mask = self.ops(*to_tv(image, label))
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


class _RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale_range`` (bilinear / nearest)."""

    def __init__(self, scale_range) -> None:
        super().__init__()
        self.scale_range = scale_range

    def make_params(self, flat_inputs):
        h, w = v2.query_size(flat_inputs)
        s = float(torch.empty(1).uniform_(*self.scale_range))
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt, params):
        return self._call_kernel(v2.functional.resize, inpt, size=params["size"], antialias=True)


class _RandomGamma(v2.Transform):
    """``image ** gamma`` with gamma drawn log-uniformly from ``gamma_range``, with
    probability ``p``; float images in [0, 1] only, masks pass through."""

    def __init__(self, gamma_range, p: float) -> None:
        super().__init__()
        self.log_range = (math.log(gamma_range[0]), math.log(gamma_range[1]))
        self.p = p

    def make_params(self, flat_inputs):
        if float(torch.rand(1)) >= self.p:
            return {"gamma": None}
        return {"gamma": math.exp(float(torch.empty(1).uniform_(*self.log_range)))}

    def transform(self, inpt, params):
        if params["gamma"] is None or not isinstance(inpt, tv_tensors.Image):
            return inpt
        return v2.functional.adjust_gamma(inpt, params["gamma"])
