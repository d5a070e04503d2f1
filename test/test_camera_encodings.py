"""Camera-driver encodings (yuv422 / UYVY, yuv422_yuy2 / YUYV, bayer_*8/16) against OpenCV
(cv_bridge's conversions) and against known pixels; depth encodings rejected."""
from __future__ import annotations

import array
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from fcn_perception.errors import ConversionError
from fcn_perception.imaging import camera_encodings as ce
from fcn_perception.imaging.decode import decode, decode_message

cv2 = pytest.importorskip("cv2")

BAYER8 = ["bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"]
#: cv_bridge's own table (cv_bridge/src/cv_bridge.cpp, getConversionCode)
CV_BRIDGE = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}


@pytest.fixture(scope="module")
def frame(camvid_dir: Path) -> np.ndarray:
    path = sorted((camvid_dir / "val").glob("*.png"))[0]
    return np.asarray(PILImage.open(path).convert("RGB"))


def _opencv_reference(encoding: str, rows: np.ndarray, h: int, w: int) -> np.ndarray:
    if encoding.startswith("yuv"):
        return cv2.cvtColor(rows.reshape(h, w, 2), CV_BRIDGE[encoding])
    return cv2.cvtColor(rows, CV_BRIDGE[encoding])


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2", *BAYER8])
@pytest.mark.parametrize("use_opencv", [True, False])
def test_decode_matches_cv_bridge_conversion(frame, encoding, use_opencv):
    """Both implementations give OpenCV's pixels exactly, on a real frame and on odd
    sizes (borders)."""
    rng = np.random.default_rng(3)
    for rgb in (frame, rng.integers(0, 256, (7, 10, 3), dtype=np.uint8),
                rng.integers(0, 256, (2, 2, 3), dtype=np.uint8)):
        h, w = rgb.shape[:2]
        rows = ce.encode_camera(rgb, encoding)
        got = ce.decode_camera(encoding, rows, w, use_opencv=use_opencv)
        np.testing.assert_array_equal(got, _opencv_reference(encoding, rows, h, w))


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2", *BAYER8, "bayer_rggb16"])
def test_known_pixels_flat_colours(encoding):
    """A flat colour survives: Bayer samples exactly; YUV within the 8-bit BT.601 round
    trip (at most 2 levels)."""
    for colour in ((200, 30, 90), (0, 0, 0), (255, 255, 255), (17, 180, 250)):
        rgb = np.zeros((6, 8, 3), np.uint8) + np.array(colour, np.uint8)
        rows = ce.encode_camera(rgb, encoding)
        got = decode(encoding, 6, 8, rows.shape[1], 0, rows.tobytes())
        tol = 0 if encoding.startswith("bayer") else 2
        assert np.abs(got.astype(int) - rgb.astype(int)).max() <= tol, (encoding, colour)


def test_bayer_site_colours_are_the_samples():
    """Known pixels of a bayer_rggb8 mosaic: R at (even, even), B at (odd, odd), G between,
    and the missing colours are neighbour means."""
    mosaic = np.zeros((4, 4), np.uint8)
    mosaic[0::2, 0::2] = 200  # R
    mosaic[1::2, 1::2] = 40  # B
    mosaic[0::2, 1::2] = 100  # G on R rows
    mosaic[1::2, 0::2] = 120  # G on B rows
    rgb = decode("bayer_rggb8", 4, 4, 4, 0, mosaic.tobytes())
    assert tuple(rgb[2, 2]) == (200, 110, 40)  # R site: G = mean of 2x100 + 2x120
    assert tuple(rgb[1, 1]) == (200, 110, 40)  # B site: R = diagonal mean
    assert tuple(rgb[2, 1]) == (200, 100, 40)  # G site on an R row
    np.testing.assert_array_equal(rgb, ce.bayer_to_rgb(mosaic, ce.BAYER["bayer_rggb8"][0]))


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv", *BAYER8,
                                      "bayer_grbg16"])
def test_decode_dispatch_with_padding_and_message(frame, encoding):
    """decode() and decode_message() read padded rows of every camera encoding."""
    h, w = frame.shape[:2]
    rows = ce.encode_camera(frame, encoding)
    padded = np.concatenate([rows, np.full((h, 6), 77, np.uint8)], axis=1)
    expected = ce.decode_camera(encoding, rows, w)

    class Msg:
        pass

    msg = Msg()
    msg.encoding, msg.height, msg.width = encoding, h, w
    msg.step, msg.is_bigendian = padded.shape[1], 0
    msg.data = array.array("B", padded.tobytes())
    np.testing.assert_array_equal(decode_message(msg), expected)


def test_bayer16_byte_order():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    little = ce.encode_camera(rgb, "bayer_bggr16")
    big = ce.encode_camera(rgb, "bayer_bggr16", is_bigendian=True)
    a = decode("bayer_bggr16", 6, 8, 16, 0, little.tobytes())
    b = decode("bayer_bggr16", 6, 8, 16, 1, big.tobytes())
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, decode("bayer_bggr8", 6, 8, 8, 0,
                                            ce.encode_camera(rgb, "bayer_bggr8").tobytes()))


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "16SC1", "64FC1"])
def test_depth_encodings_rejected_clearly(encoding):
    with pytest.raises(ConversionError, match="depth") as info:
        decode(encoding, 4, 4, 16, 0, bytes(64))
    assert "colour topic" in str(info.value)


def test_other_array_types_and_bad_sizes_rejected():
    with pytest.raises(ConversionError, match="multi-channel"):
        decode("32FC3", 2, 2, 24, 0, bytes(48))
    with pytest.raises(ConversionError, match="even width"):
        decode("yuv422", 2, 3, 6, 0, bytes(12))
    with pytest.raises(ConversionError, match="fewer than"):
        decode("yuv422", 4, 4, 8, 0, bytes(31))
    with pytest.raises(ConversionError, match="shorter than one row"):
        decode("bayer_rggb16", 4, 4, 7, 0, bytes(64))
    assert ce.depth_rejection("rgb8") is None and ce.depth_rejection("8UC3") is None


def test_opencv_is_the_faster_decoder():
    """The choice documented in camera_encodings (OpenCV) is the faster one here too: a
    loose, noise-tolerant check on small frames (not a benchmark)."""
    speed = ce.measure_speed(120, 160, repeats=7)
    for encoding, (numpy_ms, opencv_ms) in speed.items():
        assert opencv_ms < numpy_ms, (encoding, speed)
