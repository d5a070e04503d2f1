"""sensor_msgs/Image and CompressedImage -> numpy RGB, without ROS.

:func:`decode` turns the fields of a ``sensor_msgs/Image`` into an ``(H, W, 3)`` uint8
RGB array; :func:`decode_compressed` does the same for a ``CompressedImage`` (JPEG or
PNG, decoded with Pillow); :func:`decode_message` takes either message, as rclpy or
rosbags gives it.  Anything that cannot be decoded raises
:class:`~fcn_perception.errors.ConversionError` with a reason meant for a log line.

Supported raw encodings: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8`` and their
16-bit forms (``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``, ``mono16``; scaled to 8 bit,
byte order from ``is_bigendian``).  Rows may be padded: ``step`` is the row length in
bytes and may exceed ``width * bytes_per_pixel``.
"""
from __future__ import annotations

import io

import numpy as np

from fcn_perception.errors import ConversionError

#: encoding -> (channels, bytes per channel, channel order to RGB or None for mono)
ENCODINGS: dict[str, tuple[int, int, tuple[int, ...] | None]] = {
    "rgb8": (3, 1, (0, 1, 2)),
    "bgr8": (3, 1, (2, 1, 0)),
    "rgba8": (4, 1, (0, 1, 2)),
    "bgra8": (4, 1, (2, 1, 0)),
    "mono8": (1, 1, None),
    "8UC3": (3, 1, (2, 1, 0)),  # OpenCV's cv_bridge default: BGR
    "8UC1": (1, 1, None),
    "rgb16": (3, 2, (0, 1, 2)),
    "bgr16": (3, 2, (2, 1, 0)),
    "rgba16": (4, 2, (0, 1, 2)),
    "bgra16": (4, 2, (2, 1, 0)),
    "mono16": (1, 2, None),
}

#: largest side accepted (guards against absurd headers allocating huge buffers)
MAX_SIDE = 16384


def _as_bytes_view(data) -> np.ndarray:
    """A zero-copy uint8 view of ``data`` (bytes, bytearray, array.array('B'), memoryview,
    numpy array or list of ints)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain list of ints
        return np.asarray(data, dtype=np.uint8)


def decode(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: int | bool,
    data,
) -> np.ndarray:
    """Decode ``sensor_msgs/Image`` fields to a contiguous ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ConversionError: unknown encoding, zero or absurd size, ``step`` shorter than a
            row, or ``data`` shorter than ``step * height``.
    """
    spec = ENCODINGS.get(encoding)
    if spec is None:
        raise ConversionError(
            f"unsupported encoding {encoding!r}; expected one of {sorted(ENCODINGS)} "
            "(or use input_transport:=compressed for JPEG/PNG)"
        )
    channels, depth, order = spec
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"empty image ({width}x{height})")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ConversionError(f"image {width}x{height} exceeds the {MAX_SIDE} pixel limit per side")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ConversionError(
            f"step {step} is shorter than one row of {width} {encoding} pixels ({row_bytes} bytes)"
        )
    buf = _as_bytes_view(data)
    if buf.size < step * height:
        raise ConversionError(
            f"data has {buf.size} bytes, fewer than step x height = {step} x {height} = "
            f"{step * height}"
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    if depth == 2:
        # keep the most significant byte of each 16-bit sample (first when big-endian)
        pixels = rows.reshape(height, width * channels, 2)[:, :, 0 if is_bigendian else 1]
    else:
        pixels = rows
    pixels = pixels.reshape(height, width, channels)
    if order is None:
        return np.repeat(pixels, 3, axis=2)  # new contiguous array
    if order == (0, 1, 2):
        return np.ascontiguousarray(pixels[:, :, :3])
    return np.ascontiguousarray(pixels[:, :, 2::-1])  # BGR(A) -> RGB


def decode_compressed(fmt: str, data) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) to ``(H, W, 3)`` uint8 RGB.

    The container is recognised from its leading bytes; ``fmt`` (e.g. ``"jpeg"`` or
    image_transport's ``"bgr8; jpeg compressed bgr8"``) is only used in messages.
    ``compressedDepth`` (depth PNG with a header) is not supported.
    """
    from PIL import Image, UnidentifiedImageError

    buf = _as_bytes_view(data)
    if buf.size == 0:
        raise ConversionError(f"compressed image ({fmt!r}) has no data")
    if "compresseddepth" in (fmt or "").lower().replace(" ", ""):
        raise ConversionError(f"compressedDepth images ({fmt!r}) are not supported")
    head = buf[:8].tobytes()
    if head.startswith(b"\xff\xd8"):
        kind = "JPEG"
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        kind = "PNG"
    else:
        raise ConversionError(
            f"compressed image ({fmt!r}) is neither JPEG nor PNG (starts with {head[:4]!r})"
        )
    try:
        with Image.open(io.BytesIO(buf.tobytes()), formats=[kind]) as img:
            if img.width <= 0 or img.height <= 0:
                raise ConversionError(f"empty {kind} image")
            if img.width > MAX_SIDE or img.height > MAX_SIDE:
                raise ConversionError(f"{kind} image {img.width}x{img.height} is too large")
            img.load()  # raises on truncated or corrupt data
            if img.mode == "I;16" or img.mode.startswith("I;16"):
                arr = (np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8)
                return np.repeat(arr[:, :, None], 3, axis=2)
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except ConversionError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ConversionError(f"corrupt {kind} data ({fmt!r}): {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise ConversionError(f"{kind} image rejected as too large: {exc}") from exc


def decode_message(msg) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB pixels of a ``sensor_msgs/Image`` (any encoding
    :func:`decode` reads) or ``CompressedImage`` (JPEG/PNG).

    ``msg`` may be an rclpy message or a rosbags one: the fields are the same, and a
    message with a ``format`` field is a ``CompressedImage``.
    """
    if hasattr(msg, "format"):
        return decode_compressed(msg.format, msg.data)
    return decode(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)
