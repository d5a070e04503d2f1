"""Detections and label images into 3D with a registered depth image (no ROS).

Coordinates: the colour camera's optical frame (x right, y down, z forward, metres);
:class:`~fcn_perception.spatial.depth.Intrinsics` are the colour image's.  The depth
image may have another size: a colour pixel maps to the depth pixel at the same place
in the view (intrinsics scaled per axis), never through a resampled image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fcn_perception.spatial.depth import Intrinsics


@dataclass
class Boxes3D:
    """``centres (N, 3)`` and ``sizes (N, 3)`` in metres; ``valid (N,)``: False where the
    box held no valid depth (centre and size NaN)."""

    centres: np.ndarray
    sizes: np.ndarray
    valid: np.ndarray


def _depth_window(box, sx: float, sy: float, fraction: float, shape) -> tuple[slice, slice]:
    """The depth pixels under the central ``fraction`` (of width and height) of a colour
    box ``x1 y1 x2 y2`` (edges scale directly; at least one pixel)."""
    x1, y1, x2, y2 = (float(c) for c in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    hw, hh = (x2 - x1) * fraction / 2, (y2 - y1) * fraction / 2
    h, w = shape
    c0 = int(np.clip(np.floor((cx - hw) * sx), 0, w - 1))
    c1 = int(np.clip(np.ceil((cx + hw) * sx), c0 + 1, w))
    r0 = int(np.clip(np.floor((cy - hh) * sy), 0, h - 1))
    r1 = int(np.clip(np.ceil((cy + hh) * sy), r0 + 1, h))
    return slice(r0, r1), slice(c0, c1)


def boxes_3d(boxes: np.ndarray, depth: np.ndarray, camera: Intrinsics,
             central_fraction: float = 0.5) -> Boxes3D:
    """3D boxes of ``(N, 4)`` colour-pixel boxes x1 y1 x2 y2 on ``(Hd, Wd)`` depth in
    metres (NaN invalid).

    Depth ``z``: the median of the valid depths under the box's central region
    (``central_fraction`` of its width and height: the object, not the background
    around it).  Centre: the box centre ``(u, v)`` back-projected at ``z``.  Size: the
    box's width and height at ``z`` (``w z / fx``, ``h z / fy``) and, along z, the spread
    of those depths (10th to 90th percentile; 0 for a flat surface facing the camera).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(boxes)
    depth = np.asarray(depth, np.float32)
    sx, sy = depth.shape[1] / camera.width, depth.shape[0] / camera.height
    z = np.full(n, np.nan)
    spread = np.full(n, np.nan)
    for i, box in enumerate(boxes):
        rows, cols = _depth_window(box, sx, sy, central_fraction, depth.shape)
        values = depth[rows, cols]
        values = values[np.isfinite(values)]
        if values.size:  # one partition for the median and the spread
            lo, z[i], hi = np.quantile(values, (0.1, 0.5, 0.9))
            spread[i] = hi - lo
    u = (boxes[:, 0] + boxes[:, 2]) / 2
    v = (boxes[:, 1] + boxes[:, 3]) / 2
    centres = camera.back_project(u, v, z).reshape(n, 3)
    sizes = np.stack([(boxes[:, 2] - boxes[:, 0]) * z / camera.fx,
                      (boxes[:, 3] - boxes[:, 1]) * z / camera.fy, spread], axis=1)
    return Boxes3D(centres, sizes.reshape(n, 3), np.isfinite(z))


def point_grid(depth_shape: tuple[int, int], stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the depth pixels sampled every ``stride`` pixels, from the
    centre of the first ``stride`` x ``stride`` cell."""
    h, w = depth_shape
    first = (int(stride) - 1) // 2
    return np.arange(min(first, h - 1), h, stride), np.arange(min(first, w - 1), w, stride)


@dataclass
class LabelledPoints:
    """``xyz (N, 3)`` float32 metres, ``labels (N,)`` uint8, ``confidence (N,)`` float32
    or None, ``pixels (N, 2)`` the colour pixel (row, column) each label came from."""

    xyz: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray | None
    pixels: np.ndarray


def labelled_points(labels: np.ndarray, depth: np.ndarray, camera: Intrinsics,
                    stride: int = 1, confidence: np.ndarray | None = None) -> LabelledPoints:
    """The valid depth pixels every ``stride`` pixels (of the depth image) as 3D points,
    each with the class id of the colour pixel at the same place (``labels (H, W)``
    uint8, the image ``camera`` describes) and optionally its ``confidence (H, W)``."""
    labels = np.asarray(labels)
    if labels.shape != (camera.height, camera.width):
        raise ValueError(f"labels of shape {labels.shape} for a {camera.width}x"
                         f"{camera.height} camera")
    depth = np.asarray(depth, np.float32)
    rows, cols = point_grid(depth.shape, max(1, int(stride)))
    sub = depth[np.ix_(rows, cols)]
    rr, cc = np.nonzero(np.isfinite(sub))
    z = sub[rr, cc]
    dr, dc = rows[rr], cols[cc]
    # depth pixel -> the colour pixel at the same place in the view
    sx, sy = depth.shape[1] / camera.width, depth.shape[0] / camera.height
    u = np.clip(np.rint((dc + 0.5) / sx - 0.5), 0, camera.width - 1).astype(np.int64)
    v = np.clip(np.rint((dr + 0.5) / sy - 0.5), 0, camera.height - 1).astype(np.int64)
    depth_camera = camera.scaled(depth.shape[1], depth.shape[0])
    xyz = depth_camera.back_project(dc, dr, z).astype(np.float32).reshape(-1, 3)
    conf = None if confidence is None else np.asarray(confidence, np.float32)[v, u]
    return LabelledPoints(xyz, labels[v, u].astype(np.uint8), conf, np.stack([v, u], axis=1))
