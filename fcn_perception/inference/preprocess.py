"""Input checks, resize policy and normalisation, all driven by the model card.

The card's ``input`` block says how the network is fed::

    "input": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
              "size": null}          # or [H, W]

``size: null`` runs the network at the image's own resolution (FCN and R-FCN accept any
size); ``[H, W]`` resizes every image to that size (bilinear) and maps the results back
to the input resolution afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fcn_perception.card import IMAGENET_MEAN, IMAGENET_STD
from fcn_perception.errors import ImageError


def check_image(rgb) -> np.ndarray:
    """Return ``rgb`` as a C-contiguous ``(H, W, 3)`` uint8 array, or raise :class:`ImageError`."""
    if not isinstance(rgb, np.ndarray):
        raise ImageError(
            f"expected an RGB image as a numpy array of shape (H, W, 3) and dtype uint8, "
            f"got {type(rgb).__name__}"
        )
    if rgb.dtype != np.uint8:
        hint = (" (scale floats in [0, 1] with (img * 255).round().astype(np.uint8))"
                if rgb.dtype.kind == "f" else "")
        raise ImageError(
            f"expected an RGB image of dtype uint8 with shape (H, W, 3), got dtype "
            f"{rgb.dtype} with shape {rgb.shape}{hint}"
        )
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        hint = ""
        if rgb.ndim == 2:
            hint = " (a grey image: stack it with np.repeat(img[..., None], 3, axis=2))"
        elif rgb.ndim == 3 and rgb.shape[2] == 4:
            hint = " (RGBA: drop alpha with img[..., :3])"
        elif rgb.ndim == 3 and rgb.shape[0] == 3:
            hint = " (channels first: use img.transpose(1, 2, 0))"
        raise ImageError(
            f"expected an RGB image of shape (H, W, 3) and dtype uint8, got shape "
            f"{rgb.shape}{hint}"
        )
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError(f"expected a non-empty (H, W, 3) image, got shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


@dataclass(frozen=True)
class InputSpec:
    """The card's ``input`` block, checked."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    size: tuple[int, int] | None = None

    @classmethod
    def from_card(cls, card: dict) -> InputSpec:
        block = card.get("input") or {}
        mean = tuple(float(v) for v in block.get("mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in block.get("std", IMAGENET_STD))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"model card input.mean/std must be 3 numbers (std > 0), got "
                             f"{mean} / {std}")
        size = block.get("size")
        if size is not None:
            if len(size) != 2 or min(int(s) for s in size) < 1:
                raise ValueError(f"model card input.size must be null or [H, W], got {size}")
            size = (int(size[0]), int(size[1]))
        return cls(mean, std, size)


class Preprocessor:
    """Checks an image, applies the resize policy and normalises it.

    ``prepare(rgb)`` checks the image and says at which size the network runs;
    ``network_input(rgb, net_hw)`` gives the float32 ``(1, 3, h, w)`` network input on the
    CPU: a per-channel lookup table (one pass over the pixels) at native size, else
    normalise + bilinear antialiased resize (as training evaluates,
    ``F.interpolate(..., antialias=True)``).  GPU backends do the same on the device with
    :func:`network_input_torch`.
    """

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        mean = np.asarray(spec.mean, np.float64)[:, None]
        std = np.asarray(spec.std, np.float64)[:, None]
        self._lut = ((np.arange(256, dtype=np.float64)[None, :] / 255.0 - mean) / std
                     ).astype(np.float32)
        self._buffer: np.ndarray | None = None

    def prepare(self, rgb) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Return ``(checked image, (H, W) of the input, (h, w) the network runs at)``."""
        rgb = check_image(rgb)
        hw = (int(rgb.shape[0]), int(rgb.shape[1]))
        return rgb, hw, (self.spec.size or hw)

    def normalize(self, rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        h, w = rgb.shape[:2]
        if out is None:
            out = np.empty((1, 3, h, w), np.float32)
        for c in range(3):
            np.take(self._lut[c], rgb[:, :, c], out=out[0, c])
        return out

    def network_input(self, rgb: np.ndarray, net_hw: tuple[int, int] | None = None) -> np.ndarray:
        """``(1, 3, h, w)`` float32 on the CPU (a reused buffer at native size)."""
        if net_hw is None or tuple(net_hw) == rgb.shape[:2]:
            h, w = rgb.shape[:2]
            if self._buffer is None or self._buffer.shape[2:] != (h, w):
                self._buffer = np.empty((1, 3, h, w), np.float32)
            return self.normalize(rgb, self._buffer)
        import torch

        with torch.inference_mode():
            x = network_input_torch(torch.from_numpy(_writable(rgb)), self.spec, net_hw)
            return x.numpy()


def _writable(a: np.ndarray) -> np.ndarray:
    return a if a.flags.writeable else a.copy()


def normalize_torch(images, mean, std):
    """``(N, H, W, 3)`` uint8 torch tensor -> ``(N, 3, H, W)`` float normalised, on its device."""
    import torch

    x = images.permute(0, 3, 1, 2).to(torch.float32)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
    return (x - m) / s


def network_input_torch(image, spec: InputSpec, net_hw: tuple[int, int] | None = None):
    """``(H, W, 3)`` uint8 torch tensor (any device) -> ``(1, 3, h, w)`` float32 contiguous:
    resized bilinearly with antialiasing when ``net_hw`` differs, and normalised.

    The resize runs on the pixel values (channels-last, torch's fast path) before the
    normalisation, a per-channel affine map that commutes with the resize's convex
    weights: the same result as normalising first (to float rounding), several times
    faster.
    """
    import torch
    import torch.nn.functional as F

    x = image.permute(2, 0, 1).to(torch.float32)[None]  # channels-last strides: fast resize
    if net_hw is not None and tuple(net_hw) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=tuple(net_hw), mode="bilinear", align_corners=False,
                          antialias=True)
    m = torch.as_tensor(spec.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
    s = torch.as_tensor(spec.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1) * 255.0
    return ((x - m) / s).contiguous()
