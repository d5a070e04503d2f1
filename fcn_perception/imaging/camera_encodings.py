"""The encodings real camera drivers publish: packed YUV 4:2:2 and Bayer mosaics (no ROS).

* ``yuv422`` / ``uyvy`` (usb_cam, v4l2_camera): ``U Y0 V Y1`` per pixel pair;
* ``yuv422_yuy2`` / ``yuyv``: ``Y0 U Y1 V``;
* ``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8`` (industrial
  cameras), and their 16-bit forms (the most significant byte is demosaiced).

Decoded with cv_bridge's semantics, i.e. OpenCV's conversions: ``COLOR_YUV2RGB_UYVY``,
``COLOR_YUV2RGB_YUYV`` (BT.601, limited range, in OpenCV's 20-bit fixed point) and, for
ROS ``bayer_rggb8``, OpenCV's ``COLOR_BayerBG2RGB`` (OpenCV names a Bayer pattern by
the second row's second and third pixels; bilinear demosaicing).

Speed (``DECODE_SPEED``, measured with :func:`measure_speed`): OpenCV is about 10 times
faster than the NumPy versions (480x640: 0.13 vs 1.55 ms for yuv422, 0.16 vs 1.26 ms for
bayer_rggb8), so :func:`decode_camera` uses OpenCV (``opencv-python-headless``) and
falls back to the NumPy versions, which compute the very same pixels (tested against
OpenCV), only where ``cv2`` cannot be imported.

Depth-like encodings (``16UC1``, ``32FC1``, ...) are not images a segmentation or
detection network reads: :func:`depth_rejection` gives the reason to log.
"""
from __future__ import annotations

import re
import time

import numpy as np

from fcn_perception.errors import ConversionError

#: YUV 4:2:2 encodings -> (byte offset of Y0 in a 4-byte pixel pair, offset of U, of V)
YUV422 = {
    "yuv422": (1, 0, 2),  # UYVY
    "uyvy": (1, 0, 2),
    "yuv422_yuy2": (0, 1, 3),  # YUYV
    "yuyv": (0, 1, 3),
}

#: Bayer encodings -> (the colour of the pixels at (0, 0), (0, 1), (1, 0), (1, 1), bytes
#: per sample); colours are 0 = R, 1 = G, 2 = B.
BAYER = {
    f"bayer_{p}{depth}": (tuple("rgb".index(c) for c in p), depth // 8)
    for p in ("rggb", "bggr", "gbrg", "grbg")
    for depth in (8, 16)
}

#: ROS Bayer pattern -> OpenCV conversion code name (cv_bridge's mapping)
_CV_BAYER = {"rggb": "COLOR_BayerBG2RGB", "bggr": "COLOR_BayerRG2RGB",
             "gbrg": "COLOR_BayerGR2RGB", "grbg": "COLOR_BayerGB2RGB"}
_CV_YUV = {(1, 0, 2): "COLOR_YUV2RGB_UYVY", (0, 1, 3): "COLOR_YUV2RGB_YUYV"}

CAMERA_ENCODINGS = (*YUV422, *BAYER)

#: Measured with :func:`measure_speed` (2-core machine with trainings in the background,
#: one OpenCV thread, 480x640, median of 20): ms per frame, (NumPy, OpenCV 5.0).
DECODE_SPEED = {"yuv422": (1.55, 0.13), "yuv422_yuy2": (1.64, 0.15),
                "bayer_rggb8": (1.26, 0.16)}

# OpenCV's BT.601 YUV -> RGB fixed point (modules/imgproc/src/color_yuv.simd.hpp)
_SHIFT = 20
_CY, _CVR, _CVG, _CUG, _CUB = 1220542, 1673527, -852492, -409993, 2116026

def depth_rejection(encoding: str) -> str | None:
    """Why an image of ``encoding`` cannot be fed to the networks, when it is a depth-like
    (single-channel 16-bit or floating point) or other non-camera OpenCV type; else None."""
    enc = str(encoding)
    m = re.fullmatch(r"(8|16|32|64)([USF])C([1-4])?", enc.upper())
    if m is None or enc.upper() in ("8UC1", "8UC3"):
        return None
    if m.group(3) in (None, "1"):
        return (f"encoding {enc!r} is a depth (or other single-channel 16-bit/float) image, "
                "not a camera picture: the networks need colour or mono frames; point "
                "`image` at the camera's colour topic (e.g. /camera/color/image_raw), not "
                "its depth topic")
    return (f"encoding {enc!r} is a {m.group(1)}-bit multi-channel array type, not a camera "
            "picture: publish rgb8, bgr8, mono8, yuv422 or bayer frames")


def _opencv():
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv-python-headless is a dependency
        return None
    return cv2


def row_bytes(encoding: str, width: int) -> int:
    """Bytes in one row of ``width`` pixels of camera encoding ``encoding``."""
    if encoding in YUV422:
        return 2 * int(width)
    return BAYER[encoding][1] * int(width)


def decode_camera(encoding: str, rows: np.ndarray, width: int, is_bigendian: bool = False,
                  use_opencv: bool | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from the rows of a YUV 4:2:2 or Bayer image.

    ``rows``: ``(H, >= row bytes)`` uint8, the message's rows (padding after
    :func:`row_bytes` is ignored).  16-bit Bayer keeps each sample's most significant
    byte (the first when ``is_bigendian``).  ``use_opencv``: None (default) uses OpenCV
    when it is importable; False forces the NumPy version.
    """
    cv2 = _opencv() if use_opencv in (None, True) else None
    if use_opencv and cv2 is None:
        raise ConversionError("OpenCV (opencv-python-headless) is not installed")
    height = rows.shape[0]
    if encoding in YUV422:
        if width % 2:
            raise ConversionError(f"{encoding} needs an even width, got {width}")
        packed = rows[:, : width * 2]
        if cv2 is not None:
            code = getattr(cv2, _CV_YUV[YUV422[encoding]])
            return cv2.cvtColor(np.ascontiguousarray(packed).reshape(height, width, 2), code)
        return yuv422_to_rgb(packed, YUV422[encoding])
    pattern, nbytes = BAYER[encoding]
    mosaic = rows[:, : width * nbytes]
    if nbytes == 2:  # the most significant byte of each sample
        mosaic = mosaic[:, 0::2] if is_bigendian else mosaic[:, 1::2]
    if height < 2 or width < 2:
        raise ConversionError(f"{encoding} needs at least 2x2 pixels, got {width}x{height}")
    if cv2 is not None:
        name = "".join("rgb"[c] for c in pattern)
        return cv2.cvtColor(np.ascontiguousarray(mosaic), getattr(cv2, _CV_BAYER[name]))
    return bayer_to_rgb(mosaic, pattern)


# ----------------------------------------------------------------------------- NumPy
def yuv422_to_rgb(packed: np.ndarray, offsets: tuple[int, int, int]) -> np.ndarray:
    """NumPy YUV 4:2:2 -> RGB in OpenCV's fixed point (the same pixels as ``cvtColor``).

    ``packed``: ``(H, 2 W)`` uint8; ``offsets``: byte offsets of Y0, U and V in each
    4-byte pair (Y1 is at ``Y0 + 2``)."""
    h, row = packed.shape
    quads = packed.reshape(h, row // 4, 4)
    y0, u, v = offsets
    uu = quads[:, :, u].astype(np.int32) - 128
    vv = quads[:, :, v].astype(np.int32) - 128
    half = 1 << (_SHIFT - 1)
    ruv = half + _CVR * vv
    guv = half + _CVG * vv + _CUG * uu
    buv = half + _CUB * uu
    out = np.empty((h, row // 4, 2, 3), np.uint8)
    for k, offset in enumerate((y0, y0 + 2)):
        y = np.maximum(quads[:, :, offset].astype(np.int32) - 16, 0) * _CY
        for c, uv in enumerate((ruv, guv, buv)):
            out[:, :, k, c] = np.clip((y + uv) >> _SHIFT, 0, 255)
    return out.reshape(h, row // 2, 3)


def bayer_to_rgb(mosaic: np.ndarray, pattern: tuple[int, int, int, int]) -> np.ndarray:
    """NumPy bilinear demosaicing with OpenCV's rounding and borders (the pixels of
    ``cvtColor(..., COLOR_Bayer*2RGB)``).

    Each output channel at a pixel is the sample there when the pixel has that colour,
    else the rounded mean of the 2 (edge) or 4 (diagonal / cross) nearest samples of that
    colour; the outermost rows and columns copy their inner neighbours, as OpenCV does.
    """
    m = mosaic.astype(np.uint16)
    h, w = m.shape
    out = np.zeros((h, w, 3), np.uint8)
    if h >= 3 and w >= 3:
        c = m[1:-1, 1:-1]
        up, down, left, right = m[:-2, 1:-1], m[2:, 1:-1], m[1:-1, :-2], m[1:-1, 2:]
        cross = (up + down + left + right + 2) >> 2
        diag = (m[:-2, :-2] + m[:-2, 2:] + m[2:, :-2] + m[2:, 2:] + 2) >> 2
        vert = (up + down + 1) >> 1
        horiz = (left + right + 1) >> 1
        inner = np.empty((h - 2, w - 2, 3), np.uint16)
        for dy in (0, 1):
            for dx in (0, 1):
                # interior pixel (y, x) = (1 + i, 1 + j): colour of mosaic site (y%2, x%2)
                sl = np.s_[(1 - dy) % 2::2, (1 - dx) % 2::2]
                y, x = dy, dx  # parity of the site these interior positions lie on
                here = pattern[y * 2 + x]
                horiz_colour = pattern[y * 2 + (1 - x)]
                vert_colour = pattern[(1 - y) * 2 + x]
                for ch in range(3):
                    if ch == here:
                        value = c[sl]
                    elif here != 1 and ch != 1:  # R at a B site or B at an R site
                        value = diag[sl]
                    elif here != 1:  # G at an R/B site
                        value = cross[sl]
                    elif ch == horiz_colour:
                        value = horiz[sl]
                    else:
                        assert ch == vert_colour
                        value = vert[sl]
                    inner[sl + (ch,)] = value
        out[1:-1, 1:-1] = inner
    _fill_borders(out)
    return out


def _fill_borders(out: np.ndarray) -> None:
    """OpenCV's demosaic borders: the first/last column copy the second/last-but-one,
    then the first/last row copy the second/last-but-one."""
    h, w = out.shape[:2]
    if w >= 3:
        out[:, 0] = out[:, 1]
        out[:, -1] = out[:, -2]
    if h >= 3:
        out[0] = out[1]
        out[-1] = out[-2]


# ----------------------------------------------------------------------------- encode
def encode_camera(rgb: np.ndarray, encoding: str, is_bigendian: bool = False) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB frame as ``encoding`` rows (``(H, row bytes)`` uint8),
    for tools and test data: BT.601 limited-range YUV with chroma averaged over pixel
    pairs, or the Bayer pattern's samples."""
    rgb = np.asarray(rgb, np.uint8)
    h, w = rgb.shape[:2]
    if encoding in YUV422:
        if w % 2:
            raise ConversionError(f"{encoding} needs an even width, got {w}")
        f = rgb.astype(np.float32)
        r, g, b = f[..., 0], f[..., 1], f[..., 2]
        y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
        u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
        v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
        u = (u[:, 0::2] + u[:, 1::2]) / 2
        v = (v[:, 0::2] + v[:, 1::2]) / 2
        quads = np.empty((h, w // 2, 4), np.float32)
        y0, uo, vo = YUV422[encoding]
        quads[..., y0], quads[..., y0 + 2] = y[:, 0::2], y[:, 1::2]
        quads[..., uo], quads[..., vo] = u, v
        return np.round(quads).clip(0, 255).astype(np.uint8).reshape(h, w * 2)
    if encoding not in BAYER:
        raise ConversionError(f"{encoding!r} is not a camera encoding {CAMERA_ENCODINGS}")
    pattern, nbytes = BAYER[encoding]
    mosaic = np.empty((h, w), np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, pattern[dy * 2 + dx]]
    if nbytes == 2:
        wide = (mosaic.astype(np.uint16) * 257).astype(">u2" if is_bigendian else "<u2")
        return np.ascontiguousarray(wide).view(np.uint8).reshape(h, -1)
    return mosaic


def measure_speed(height: int = 480, width: int = 640, repeats: int = 20) -> dict:
    """``{encoding: (numpy ms, opencv ms)}`` per frame (median of ``repeats``), one
    OpenCV thread."""
    cv2 = _opencv()
    if cv2 is not None:
        cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = {}
    for encoding in ("yuv422", "yuv422_yuy2", "bayer_rggb8"):
        rows = encode_camera(rgb, encoding)
        times = []
        for flag in (False, True):
            samples = []
            for _ in range(repeats):
                t = time.perf_counter()
                decode_camera(encoding, rows, width, use_opencv=flag)
                samples.append((time.perf_counter() - t) * 1e3)
            times.append(float(np.median(samples)))
        out[encoding] = tuple(times)
    return out
