"""Depth images and camera intrinsics from ``sensor_msgs`` fields (no ROS).

Depth: ``32FC1`` in metres or ``16UC1`` (also ``mono16``) in millimetres, registered to
the colour camera, as ROS depth drivers publish it (REP 118).  Zero, negative, NaN and
infinite depths are invalid and become NaN.

Intrinsics: the ``K`` matrix of ``sensor_msgs/CameraInfo`` for an image of its
``width`` x ``height``.  Pixel ``(u, v)`` (u to the right, v down; a pixel's centre at
integer coordinates) at depth ``z`` is the point ``((u - cx) z / fx, (v - cy) z / fy, z)``
in the camera's optical frame (x right, y down, z forward).  An image of another size
(a depth frame registered to the colour camera but at another resolution, or a binned
colour frame) is mapped through the intrinsics scaled per axis
(:meth:`Intrinsics.scaled`), so no image is resampled.  Distortion is not applied: the
images are taken as rectified (``image_rect``) or the distortion as negligible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fcn_perception.errors import ConversionError
from fcn_perception.imaging.decode import check_size, clip_text

#: encoding -> (NumPy little-endian dtype, units per metre)
DEPTH_ENCODINGS = {"32FC1": ("<f4", 1.0), "16UC1": ("<u2", 1000.0), "mono16": ("<u2", 1000.0)}


def decode_depth(encoding: str, height: int, width: int, step: int, is_bigendian,
                 data, max_pixels: int | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` fields of a depth image -> ``(H, W)`` float32 metres, NaN
    where invalid.  Raises ConversionError (ImageTooLargeError above ``max_pixels``)."""
    spec = DEPTH_ENCODINGS.get(encoding)
    if spec is None:
        raise ConversionError(f"depth encoding {clip_text(encoding)} is not one of "
                              f"{', '.join(DEPTH_ENCODINGS)} (metres or millimetres)")
    dtype, unit = spec
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"empty depth image ({width}x{height})")
    check_size(width, height, max_pixels, f"{encoding} depth image")
    item = np.dtype(dtype).itemsize
    if step < width * item:
        raise ConversionError(f"depth step {step} is shorter than one row of {width} "
                              f"{encoding} pixels ({width * item} bytes)")
    buf = np.frombuffer(memoryview(data).cast("B") if not isinstance(data, np.ndarray)
                        else data.view(np.uint8).reshape(-1), np.uint8)
    if buf.size < step * height:
        raise ConversionError(f"depth data has {buf.size} bytes, fewer than step x height "
                              f"= {step * height}")
    rows = buf[: step * height].reshape(height, step)[:, : width * item]
    order = np.dtype(dtype).newbyteorder(">" if is_bigendian else "<")
    raw = np.ascontiguousarray(rows).view(order).reshape(height, width)
    metres = raw.astype(np.float32)
    if unit != 1.0:
        metres /= np.float32(unit)
    metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def depth_from_msg(msg, max_pixels: int | None = None) -> np.ndarray:
    """:func:`decode_depth` of a ``sensor_msgs/Image``."""
    return decode_depth(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                        msg.data, max_pixels)


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera for an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise ConversionError(
                f"camera_info K has fx={self.fx}, fy={self.fy}, cx={self.cx}, cy={self.cy}: "
                "focal lengths must be positive (is the camera calibrated?)")
        if self.width <= 0 or self.height <= 0:
            raise ConversionError(f"camera_info size {self.width}x{self.height} is empty")

    @classmethod
    def from_camera_info(cls, k, width: int, height: int,
                         image_size: tuple[int, int] | None = None) -> Intrinsics:
        """From CameraInfo's row-major 3x3 ``k`` and its ``width``/``height``; a size of
        0 (some drivers leave it unset) is taken as ``image_size`` ``(H, W)``."""
        k = np.asarray(k, np.float64).reshape(-1)
        if k.size != 9:
            raise ConversionError(f"camera_info K has {k.size} values, not 9")
        if (not width or not height) and image_size is not None:
            height, width = image_size
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera for an image of ``width`` x ``height`` covering the same view
        (scaled per axis, pixel centres kept: ``u' = (u + 0.5) s - 0.5``)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, int(width), int(height))

    def back_project(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Pixels ``u``, ``v`` at depths ``z`` (same shapes) -> ``(..., 3)`` points in
        the optical frame."""
        z = np.asarray(z, np.float64)
        return np.stack([(np.asarray(u) - self.cx) * z / self.fx,
                         (np.asarray(v) - self.cy) * z / self.fy, z], axis=-1)


def intrinsics_from_msg(info, image_size: tuple[int, int]) -> Intrinsics:
    """The intrinsics of a ``sensor_msgs/CameraInfo`` scaled to the colour image's
    ``(H, W)`` (a binned or resized image keeps its camera_info's full-size K)."""
    base = Intrinsics.from_camera_info(info.k, info.width, info.height, image_size)
    return base.scaled(image_size[1], image_size[0])
