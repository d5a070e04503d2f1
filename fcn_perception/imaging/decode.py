"""sensor_msgs/Image and CompressedImage -> numpy RGB, without ROS.

:func:`decode` turns the fields of a ``sensor_msgs/Image`` into an ``(H, W, 3)`` uint8
RGB array; :func:`decode_compressed` does the same for a ``CompressedImage`` (JPEG or
PNG, decoded with Pillow); :func:`decode_message` takes either message, as rclpy or
rosbags gives it.  Anything that cannot be decoded raises
:class:`~fcn_perception.errors.ConversionError` with a reason meant for a log line.

Supported raw encodings: ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8`` and their
16-bit forms (``rgb16``, ``bgr16``, ``rgba16``, ``bgra16``, ``mono16``; scaled to 8 bit,
byte order from ``is_bigendian``), and the camera drivers' ``yuv422`` (UYVY),
``yuv422_yuy2`` (YUYV) and ``bayer_*8``/``bayer_*16`` with cv_bridge's (OpenCV's)
conversions (:mod:`~fcn_perception.imaging.camera_encodings`).  Depth-like encodings
(``16UC1``, ``32FC1``) are rejected with a message saying so.  Rows may be padded:
``step`` is the row length in bytes and may exceed ``width * bytes_per_pixel``.

Size limits (decompression bombs): every function takes ``max_pixels`` (default
:data:`DEFAULT_MAX_PIXELS`, 4096 x 4096 = 16 Mpx) and raises
:class:`~fcn_perception.errors.ImageTooLargeError` for a larger image *before* any pixel
buffer is allocated: a raw image by its ``width x height``, a JPEG or PNG by the size its
header declares (every JPEG frame header before the first scan, the PNG ``IHDR``), read
here without decoding.  A 793-byte JPEG can declare 13300 x 13300 pixels.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from fcn_perception.errors import ConversionError, ImageTooLargeError
from fcn_perception.imaging.camera_encodings import CAMERA_ENCODINGS, decode_camera, depth_rejection
from fcn_perception.imaging.camera_encodings import row_bytes as camera_row_bytes

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
#: default limit on width x height of a decoded image (4096 x 4096, 16 Mpx: above the
#: cameras robots run these models on); the nodes' ``max_input_pixels`` parameter
DEFAULT_MAX_PIXELS = 4096 * 4096

#: JPEG start-of-frame markers (SOF0-3, 5-7, 9-11, 13-15; not DHT 0xC4, JPG 0xC8, DAC 0xCC)
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                       0xCE, 0xCF))
#: JPEG markers without a length field (TEM, RST0-7, SOI)
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8), 0xD8))


def clip_text(value, limit: int = 40) -> str:
    """``repr(value)`` cut to about ``limit`` characters: message fields come from any
    participant on the DDS domain and end up in log lines."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(str(value))} chars)"


def _limit(max_pixels: int | None) -> int:
    return DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)


def check_size(width: int, height: int, max_pixels: int | None = None, what: str = "image"):
    """Raise :class:`ImageTooLargeError` when ``width x height`` exceeds the limits."""
    limit = _limit(max_pixels)
    if width > MAX_SIDE or height > MAX_SIDE or width * height > limit:
        raise ImageTooLargeError(
            f"{what} of {width}x{height} ({width * height / 1e6:.1f} Mpx) rejected: above "
            f"the limit of {limit} pixels ({limit / 1e6:.1f} Mpx) and {MAX_SIDE} per side "
            "(raise max_input_pixels if a real camera sends this)"
        )


def declared_size(buf: np.ndarray | bytes) -> tuple[str, int, int]:
    """``(kind, width, height)`` a JPEG or PNG header declares, read without decoding.

    For a JPEG the largest of its frame headers before the first scan (a decoder may use
    any of them).  Raises :class:`ConversionError` when the header is missing or cut."""
    data = buf.tobytes() if isinstance(buf, np.ndarray) else bytes(buf)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ConversionError("corrupt PNG data: no IHDR header after the signature")
        return "PNG", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not data.startswith(b"\xff\xd8"):
        raise ConversionError(f"neither JPEG nor PNG (starts with {data[:4]!r})")
    pos, n, sizes = 2, len(data), []
    while pos < n:
        if data[pos] != 0xFF:
            raise ConversionError(f"corrupt JPEG data: no marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            break
        if pos + 2 > n:
            break
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            raise ConversionError(f"corrupt JPEG data: marker 0x{marker:02X} has length {length}")
        if marker in _JPEG_SOF:
            if pos + 7 > n:
                break
            height = int.from_bytes(data[pos + 3:pos + 5], "big")
            width = int.from_bytes(data[pos + 5:pos + 7], "big")
            sizes.append((width, height))
        pos += length
    if not sizes:
        raise ConversionError("corrupt JPEG data: no frame header (SOF) before the image data")
    width, height = max(sizes, key=lambda wh: wh[0] * wh[1] + max(wh))
    return "JPEG", width, height


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
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode ``sensor_msgs/Image`` fields to a contiguous ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ConversionError: unknown encoding, zero or absurd size, ``step`` shorter than a
            row, or ``data`` shorter than ``step * height``.
        ImageTooLargeError: more than ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`).
    """
    spec = ENCODINGS.get(encoding)
    camera = encoding in CAMERA_ENCODINGS
    if spec is None and not camera:
        reason = depth_rejection(encoding)
        if reason:
            raise ConversionError(reason)
        raise ConversionError(
            f"unsupported encoding {clip_text(encoding)}; expected one of "
            f"{sorted(ENCODINGS) + list(CAMERA_ENCODINGS)} "
            "(or use input_transport:=compressed for JPEG/PNG)"
        )
    channels, depth, order = spec or (1, 1, None)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"empty image ({width}x{height})")
    check_size(width, height, max_pixels, f"{encoding} image")
    row_bytes = camera_row_bytes(encoding, width) if camera else width * channels * depth
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
    if camera:
        return decode_camera(encoding, rows, width, bool(is_bigendian))
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


def decode_compressed(fmt: str, data, max_pixels: int | None = None) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) to ``(H, W, 3)`` uint8 RGB.

    The container is recognised from its leading bytes; ``fmt`` (e.g. ``"jpeg"`` or
    image_transport's ``"bgr8; jpeg compressed bgr8"``) is only used in messages.
    ``compressedDepth`` (depth PNG with a header) is not supported.  The size the header
    declares is checked against ``max_pixels`` before anything is decoded.
    """
    buf = _as_bytes_view(data)
    what = f"compressed image ({clip_text(fmt)})"
    if buf.size == 0:
        raise ConversionError(f"{what} has no data")
    if "compresseddepth" in (fmt or "").lower().replace(" ", ""):
        raise ConversionError(f"compressedDepth images ({clip_text(fmt)}) are not supported")
    raw = buf.tobytes()
    try:
        kind, width, height = declared_size(raw)
    except ConversionError as exc:
        raise ConversionError(f"{what}: {exc}") from None
    if width <= 0 or height <= 0:
        raise ConversionError(f"{what}: empty {kind} image ({width}x{height})")
    check_size(width, height, max_pixels, f"{kind} {what}")
    try:
        with Image.open(io.BytesIO(raw), formats=[kind]) as img:
            if img.width <= 0 or img.height <= 0:
                raise ConversionError(f"empty {kind} image")
            # Pillow's own reading of the header, in case it differs from ours
            check_size(img.width, img.height, max_pixels, f"{kind} {what}")
            img.load()  # raises on truncated or corrupt data
            if img.mode == "I;16" or img.mode.startswith("I;16"):
                arr = (np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8)
                return np.repeat(arr[:, :, None], 3, axis=2)
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except ConversionError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ConversionError(f"corrupt {kind} data ({clip_text(fmt)}): {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{kind} image rejected as too large: {exc}") from exc


def check_message_size(msg, max_pixels: int | None = None) -> None:
    """Raise :class:`ImageTooLargeError` when an image message declares a size above the
    limits: a raw ``Image``'s width and height fields, a ``CompressedImage``'s JPEG/PNG
    header; no pixel is read.  Cheap enough for a subscription callback, so a frame is
    refused (and counted) on receipt even when a newer one replaces it before decoding.
    A header that cannot be read passes: decoding reports it."""
    if hasattr(msg, "format"):
        try:
            kind, width, height = declared_size(_as_bytes_view(msg.data))
        except ConversionError:
            return
        check_size(width, height, max_pixels, f"{kind} compressed image ({clip_text(msg.format)})")
    else:
        check_size(int(msg.width), int(msg.height), max_pixels,
                   f"{clip_text(msg.encoding)} image")


def decode_message(msg, max_pixels: int | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB pixels of a ``sensor_msgs/Image`` (any encoding
    :func:`decode` reads) or ``CompressedImage`` (JPEG/PNG).

    ``msg`` may be an rclpy message or a rosbags one: the fields are the same, and a
    message with a ``format`` field is a ``CompressedImage``.  Images above
    ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`) raise
    :class:`~fcn_perception.errors.ImageTooLargeError` before they are decoded.
    """
    if hasattr(msg, "format"):
        return decode_compressed(msg.format, msg.data, max_pixels)
    return decode(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data,
                  max_pixels)
