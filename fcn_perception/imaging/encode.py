"""numpy RGB -> sensor_msgs/Image fields and JPEG/PNG bytes, without ROS (the inverse of
:mod:`fcn_perception.imaging.decode`, for tools and test data)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from fcn_perception.errors import ConversionError
from fcn_perception.imaging.decode import ENCODINGS


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 RGB array as JPEG or PNG bytes (for tools and tests)."""
    out = io.BytesIO()
    kind = "PNG" if "png" in fmt.lower() else "JPEG"
    Image.fromarray(np.ascontiguousarray(rgb)).save(out, format=kind, quality=quality)
    return out.getvalue()


def encode(rgb: np.ndarray, encoding: str, is_bigendian: bool = False, pad: int = 0):
    """The inverse of :func:`~fcn_perception.imaging.decode.decode`.

    Returns ``(height, width, step, data_bytes)`` for an ``(H, W, 3)`` uint8 RGB array in
    ``encoding``, each row padded with ``pad`` zero bytes.
    """
    spec = ENCODINGS.get(encoding)
    if spec is None:
        raise ConversionError(f"unsupported encoding {encoding!r}")
    channels, depth, order = spec
    height, width = rgb.shape[:2]
    if order is None:
        pix = np.round(rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        pix = pix.clip(0, 255).astype(np.uint8)[:, :, None]
    else:
        pix = rgb[:, :, list(order)]
        if channels == 4:
            pix = np.concatenate([pix, np.full((height, width, 1), 255, np.uint8)], axis=2)
    if depth == 2:
        wide = pix.astype(np.uint16) * 257
        pix = np.ascontiguousarray(wide.astype(">u2" if is_bigendian else "<u2")).view(np.uint8)
    rows = pix.reshape(height, -1)
    if pad:
        rows = np.concatenate([rows, np.zeros((height, pad), np.uint8)], axis=1)
    return height, width, rows.shape[1], np.ascontiguousarray(rows).tobytes()
