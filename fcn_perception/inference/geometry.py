"""The network's input geometry: input size, aspect policy and region of interest, with
the exact mapping of the outputs back to input-image pixels (no ROS).

A :class:`Geometry` says how a frame is fed to the network:

``size``
    the network input ``(h, w)``; None runs the network at the region's own size.
``policy``
    how a region whose aspect differs from ``size`` is fitted:

    * ``resize``: stretched to ``size`` (the default; a 16:9 camera is squashed);
    * ``letterbox``: scaled to fit inside ``size`` keeping its aspect, centred, the rest
      filled with ``fill`` (the model card's mean colour, i.e. zero after
      normalisation);
    * ``crop``: the centred part of the region with the aspect of ``size``, scaled to
      ``size`` (the sides of the frame are not seen).
``roi``
    ``(x, y, width, height)`` in input pixels (clipped to the frame); None: the frame.
``max_pixels``
    with ``size`` None, the most pixels the network runs at: a larger region is scaled
    down to it, keeping its aspect (:data:`MAX_NETWORK_PIXELS` by default), so that the
    memory one frame costs is bounded whatever size a camera sends.  The outputs are
    mapped back to the frame as for any other network size.

:meth:`Geometry.place` gives the :class:`Placement` of one frame size: the input
rectangle the network sees (``region``), and the canvas rectangle it lands in
(``content``).  The mapping between the two is the affine map
``x_in = region.x0 + (x_net - content.x0) * region_w / content_w`` (same for ``y``),
with the sizes of the resize actually performed, so boxes map back exactly.  Pixel
maps (labels, confidence, scores) are cut to ``content``, resized to the region's size
and pasted into a frame-sized map; pixels the network did not see get
:data:`UNSEEN_LABEL` (labels) or 0 (confidence).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

POLICIES = ("resize", "letterbox", "crop")
#: label id of input pixels the network did not see (outside the ROI or the crop)
UNSEEN_LABEL = 255
#: default ``Geometry.max_pixels``: 1920x1080 runs at its own size; the FCN-8s / R-FCN
#: Lite0 on ONNX Runtime CPU then need about 260 MB above a node's ~1.1 GB at rest, a
#: node well inside 2 GB (docs/bench_transport.md; larger frames are scaled down to it)
MAX_NETWORK_PIXELS = 1920 * 1080


@dataclass(frozen=True)
class Rect:
    """``[y0, y1) x [x0, x1)`` in integer pixels."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass(frozen=True)
class Placement:
    """Where a frame of ``input_hw`` goes in the network input, and back."""

    input_hw: tuple[int, int]
    region: Rect  # input pixels the network sees
    net_hw: tuple[int, int]  # the network input (canvas) size
    content: Rect  # canvas pixels the region is resized into
    #: the region is scaled down here, in uint8, before it reaches a backend (a frame
    #: above ``Geometry.max_pixels``: a float copy at its own size would cost 12 bytes
    #: a pixel)
    prescale: bool = False

    @property
    def whole_frame(self) -> bool:
        """The network sees the whole frame on the whole canvas (only a resize)."""
        h, w = self.input_hw
        return self.region == Rect(0, 0, h, w) and self.content == Rect(0, 0, *self.net_hw)

    @property
    def padded(self) -> bool:
        return self.content != Rect(0, 0, *self.net_hw)

    # ------------------------------------------------------------------ forward
    def network_image(self, rgb: np.ndarray, fill=(0, 0, 0)) -> tuple[np.ndarray, tuple]:
        """``(image, resize_to)``: the uint8 image to hand to a backend and the size it
        resizes it to (the backend's own resize: bilinear with antialiasing).

        Without padding that is the region (a view when it is the frame) and ``net_hw``;
        with letterbox padding, the canvas itself (the region resized here, the same way,
        and pasted on ``fill``) and ``net_hw`` (no further resize).
        """
        region = rgb[self.region.slices()]
        if self.prescale:
            return shrink_image(region, self.net_hw), self.net_hw
        if not self.padded and self.region.hw == tuple(rgb.shape[:2]):
            return rgb, self.net_hw
        if not self.padded:
            return np.ascontiguousarray(region), self.net_hw
        canvas = np.empty((*self.net_hw, 3), np.uint8)
        canvas[:] = np.asarray(fill, np.uint8)
        canvas[self.content.slices()] = resize_image(region, self.content.hw)
        return canvas, self.net_hw

    def to_network(self, points: np.ndarray) -> np.ndarray:
        """``(..., 2)`` input ``x, y`` -> network-input ``x, y`` (continuous pixels)."""
        sx, sy = self._scale()
        p = np.asarray(points, np.float64)
        return np.stack([(p[..., 0] - self.region.x0) / sx + self.content.x0,
                         (p[..., 1] - self.region.y0) / sy + self.content.y0], -1)

    # ------------------------------------------------------------------ back
    def _scale(self) -> tuple[float, float]:
        """Input pixels per network pixel, ``(x, y)``."""
        return (self.region.width / self.content.width,
                self.region.height / self.content.height)

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """``(..., 2)`` network ``x, y`` -> input ``x, y`` (the inverse of
        :meth:`to_network`)."""
        sx, sy = self._scale()
        p = np.asarray(points, np.float64)
        return np.stack([(p[..., 0] - self.content.x0) * sx + self.region.x0,
                         (p[..., 1] - self.content.y0) * sy + self.region.y0], -1)

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        """``(N, 4)`` network ``x1, y1, x2, y2`` -> input pixels, clipped to the region."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return boxes.copy()
        sx, sy = self._scale()
        out = np.empty_like(boxes)
        out[:, 0::2] = (boxes[:, 0::2] - self.content.x0) * sx + self.region.x0
        out[:, 1::2] = (boxes[:, 1::2] - self.content.y0) * sy + self.region.y0
        out[:, 0::2] = out[:, 0::2].clip(self.region.x0, self.region.x1)
        out[:, 1::2] = out[:, 1::2].clip(self.region.y0, self.region.y1)
        return out

    def content_of(self, canvas_map: np.ndarray) -> np.ndarray:
        """The ``content`` part of a canvas-sized map (``(h, w)`` or ``(C, h, w)``)."""
        ys, xs = self.content.slices()
        return canvas_map[..., ys, xs]

    def paste(self, region_map: np.ndarray, fill) -> np.ndarray:
        """A frame-sized ``(H, W)`` map: ``region_map`` (region-sized) in the region,
        ``fill`` elsewhere (no copy when the region is the frame)."""
        if self.region.hw == tuple(self.input_hw):
            return np.ascontiguousarray(region_map)
        out = np.full(self.input_hw, fill, region_map.dtype)
        out[self.region.slices()] = region_map
        return out


@dataclass(frozen=True)
class Geometry:
    """Network input size, aspect policy and region of interest (see the module doc)."""

    size: tuple[int, int] | None = None
    policy: str = "resize"
    roi: tuple[int, int, int, int] | None = None
    fill: tuple[int, int, int] = (0, 0, 0)
    max_pixels: int = MAX_NETWORK_PIXELS

    def __post_init__(self) -> None:
        if int(self.max_pixels) < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        object.__setattr__(self, "max_pixels", int(self.max_pixels))
        if self.policy not in POLICIES:
            raise ValueError(f"aspect policy {self.policy!r} is not one of {', '.join(POLICIES)}")
        if self.size is not None:
            size = tuple(int(s) for s in self.size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"network input size must be (height, width) >= 1, got "
                                 f"{self.size}")
            object.__setattr__(self, "size", size)
        if self.roi is not None:
            roi = tuple(int(v) for v in self.roi)
            if len(roi) != 4 or roi[0] < 0 or roi[1] < 0 or roi[2] < 0 or roi[3] < 0:
                raise ValueError(f"roi must be (x, y, width, height) >= 0, got {self.roi}")
            object.__setattr__(self, "roi", None if roi == (0, 0, 0, 0) else roi)

    @classmethod
    def from_params(cls, height: int = 0, width: int = 0, policy: str = "resize",
                    roi=(0, 0, 0, 0), fill=(0, 0, 0), card_size=None) -> Geometry:
        """From node-style parameters: ``height``/``width`` 0 = the card's ``input.size``
        (``card_size``; None: native); ``roi`` ``(x, y, w, h)`` with ``w``/``h`` 0 = to
        the frame's edge, all 0 = the whole frame."""
        if (height > 0) != (width > 0):
            raise ValueError("set both the network input height and width, or neither "
                             f"(got {height}x{width})")
        size = (int(height), int(width)) if height > 0 else (tuple(card_size) if card_size
                                                             else None)
        roi = tuple(int(v) for v in roi) if roi is not None else None
        return cls(size=size, policy=policy, roi=roi, fill=tuple(int(v) for v in fill))

    @property
    def is_default(self) -> bool:
        return self.policy == "resize" and self.roi is None

    def region_of(self, input_hw: tuple[int, int]) -> Rect:
        """The ROI clipped to a frame of ``input_hw`` (width/height 0: to the edge)."""
        h, w = (int(v) for v in input_hw)
        if self.roi is None:
            return Rect(0, 0, h, w)
        x, y, rw, rh = self.roi
        x1 = w if rw == 0 else min(w, x + rw)
        y1 = h if rh == 0 else min(h, y + rh)
        x0, y0 = min(x, w), min(y, h)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ValueError(f"the region of interest {self.roi} (x, y, width, height) lies "
                             f"outside the {w}x{h} frame")
        return Rect(y0, x0, y1, x1)

    def place(self, input_hw: tuple[int, int]) -> Placement:
        """The :class:`Placement` of a frame of ``input_hw``."""
        region = self.region_of(input_hw)
        rh, rw = region.hw
        if self.size is None:
            if rh * rw > self.max_pixels:  # scaled down, aspect kept
                scale = math.sqrt(self.max_pixels / (rh * rw))
                nh, nw = max(1, int(rh * scale)), max(1, int(rw * scale))
                return Placement(tuple(input_hw), region, (nh, nw), Rect(0, 0, nh, nw),
                                 prescale=True)
            return Placement(tuple(input_hw), region, (rh, rw), Rect(0, 0, rh, rw))
        nh, nw = self.size
        if self.policy == "letterbox":
            scale = min(nh / rh, nw / rw)
            ch = min(nh, max(1, round(rh * scale)))
            cw = min(nw, max(1, round(rw * scale)))
            top, left = (nh - ch) // 2, (nw - cw) // 2
            return Placement(tuple(input_hw), region, (nh, nw),
                             Rect(top, left, top + ch, left + cw))
        if self.policy == "crop":
            # the largest centred part of the region with the network's aspect
            if rw * nh > rh * nw:  # region wider than the network input
                cw = max(1, min(rw, round(rh * nw / nh)))
                x0 = region.x0 + (rw - cw) // 2
                region = Rect(region.y0, x0, region.y1, x0 + cw)
            else:
                ch = max(1, min(rh, round(rw * nh / nw)))
                y0 = region.y0 + (rh - ch) // 2
                region = Rect(y0, region.x0, y0 + ch, region.x1)
        return Placement(tuple(input_hw), region, (nh, nw), Rect(0, 0, nh, nw))


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``size`` bilinearly with antialiasing (the backends' resize,
    ``F.interpolate(..., antialias=True)``), rounded to uint8."""
    if tuple(rgb.shape[:2]) == tuple(size):
        return np.ascontiguousarray(rgb)
    import torch
    import torch.nn.functional as F

    src = rgb if rgb.flags.writeable else rgb.copy()
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(src)).permute(2, 0, 1)[None].float()
        y = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False,
                          antialias=True)
        return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def shrink_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> the smaller ``size`` with Pillow's antialiased bilinear
    filter, in uint8 (a frame above ``max_pixels``: :func:`resize_image` would hold a
    float32 copy of the whole frame, 12 bytes a pixel; Pillow works in place in uint8)."""
    from PIL import Image

    h, w = size
    image = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(image.resize((int(w), int(h)), Image.BILINEAR))


def resize_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an ``(h, w)`` map to ``size`` (pixel centres)."""
    h, w = values.shape[-2:]
    if (h, w) == tuple(size):
        return values
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return values[..., rows[:, None], cols[None, :]]


def resize_bilinear(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (``align_corners=False``) of an ``(h, w)`` float map to ``size``."""
    h, w = values.shape
    if (h, w) == tuple(size):
        return values
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(values, np.float32))[None, None]
        return F.interpolate(t, size=tuple(size), mode="bilinear",
                             align_corners=False)[0, 0].numpy()
