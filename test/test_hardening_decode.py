"""Hostile image messages, ROS-free: size limits read from headers before decoding
(decompression bombs), short error messages, and property-based fuzzing of the
conversion path (:func:`fcn_perception.imaging.decode.decode_message`).

Fuzz case counts: 2,000 in the default run, 10,000 when slow tests are selected
explicitly (``pytest -m slow``); FCN_FUZZ_CASES=N sets the total.
"""
from __future__ import annotations

import contextlib
import io
import os
import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from PIL import ImageFile

from fcn_perception.errors import ConversionError, ImageTooLargeError
from fcn_perception.imaging.decode import (
    DEFAULT_MAX_PIXELS,
    ENCODINGS,
    MAX_SIDE,
    declared_size,
    decode,
    decode_compressed,
    decode_message,
)
from fcn_perception.imaging.encode import encode, encode_compressed

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
MAX_MESSAGE = ConversionError.MAX_LENGTH


# ----------------------------------------------------------------------------- bombs
def jpeg_declaring(width: int, height: int, base: bytes | None = None) -> bytes:
    """A small real JPEG whose frame header is rewritten to declare ``width x height``
    (the scan data stays that of a 16x16 image: Pillow pads the rest with grey)."""
    data = bytearray(base or encode_compressed(np.full((16, 16, 3), 90, np.uint8), "jpeg"))
    sof = next(i for i in range(2, len(data) - 9)
               if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


@contextlib.contextmanager
def pixels_decoded():
    """The pixel counts of the images whose pixels Pillow decodes inside the block: a
    pass-through recorder around ``ImageFile.load`` (the real decoder runs). This says
    what was decoded, on any CPU, where a time bound would depend on the CPU's speed."""
    seen: list[int] = []
    original = ImageFile.ImageFile.load

    def load(self):
        seen.append(self.size[0] * self.size[1])
        return original(self)

    ImageFile.ImageFile.load = load
    try:
        yield seen
    finally:
        ImageFile.ImageFile.load = original


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def png_grey(width: int, height: int, value: int = 0) -> bytes:
    """A complete, valid 8-bit grey PNG (zlib-streamed: 13000x13000 is ~164 KB)."""
    comp = zlib.compressobj(9)
    row = b"\0" + bytes([value]) * width
    parts = [comp.compress(row) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    return png_grey(13000, 13000)


def test_jpeg_bomb_is_rejected_from_its_header_without_decoding():
    bomb = jpeg_declaring(13300, 13300)
    assert len(bomb) < 1000  # the issue's 793-byte JPEG
    assert declared_size(bomb) == ("JPEG", 13300, 13300)
    # Pillow alone would decode it (13300^2 is under its own bomb threshold)
    with PILImage.open(io.BytesIO(bomb)) as img:
        assert img.size == (13300, 13300)
    with pixels_decoded() as seen, pytest.raises(ImageTooLargeError,
                                                  match=r"13300x13300.*max_input_pixels"):
        decode_compressed("jpeg", bomb)
    assert seen == []  # rejected from the header: no pixel decoded


def test_valid_png_bomb_is_rejected(png_bomb):
    assert len(png_bomb) < 400_000
    with PILImage.open(io.BytesIO(png_bomb)) as img:  # a valid PNG Pillow opens
        assert img.size == (13000, 13000)
    with pixels_decoded() as seen, pytest.raises(ImageTooLargeError, match="13000x13000"):
        decode_message(SimpleNamespace(format="png", data=png_bomb))
    assert seen == []


def test_jpeg_with_a_second_larger_frame_header_is_rejected():
    """A decoder may use any frame header before the scan: the largest counts."""
    small = encode_compressed(np.zeros((8, 8, 3), np.uint8), "jpeg")
    sof = next(i for i in range(2, len(small)) if small[i:i + 2] == b"\xff\xc0")
    length = int.from_bytes(small[sof + 2:sof + 4], "big")
    big = bytearray(small[sof:sof + 2 + length])
    big[5:7], big[7:9] = (9000).to_bytes(2, "big"), (9000).to_bytes(2, "big")
    data = small[:sof + 2 + length] + bytes(big) + small[sof + 2 + length:]
    assert declared_size(data) == ("JPEG", 9000, 9000)
    with pytest.raises(ImageTooLargeError):
        decode_compressed("jpeg", data)


def test_limit_is_a_parameter_and_real_camera_sizes_pass():
    frame = np.zeros((2160, 3840, 3), np.uint8)  # 4K UHD: 8.3 Mpx, under the default
    jpeg = encode_compressed(frame, "jpeg")
    assert decode_compressed("jpeg", jpeg).shape == (2160, 3840, 3)
    with pytest.raises(ImageTooLargeError, match="limit of 1000000 pixels"):
        decode_compressed("jpeg", jpeg, max_pixels=1_000_000)
    assert DEFAULT_MAX_PIXELS == 4096 * 4096


@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "bgra16"])
def test_raw_image_size_is_bounded(encoding):
    channels, depth, _ = ENCODINGS[encoding]
    # 5000 x 4000 = 20 Mpx > 16 Mpx default: rejected before the (short) data is looked at
    with pytest.raises(ImageTooLargeError, match="5000x4000"):
        decode(encoding, 4000, 5000, 5000 * channels * depth, 0, b"")
    h, w, step, data = encode(np.zeros((30, 40, 3), np.uint8), encoding)
    assert decode(encoding, h, w, step, 0, data, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageTooLargeError, match="limit of 1199 pixels"):
        decode(encoding, h, w, step, 0, data, max_pixels=1199)


def test_attacker_strings_are_cut_in_messages():
    with pytest.raises(ConversionError) as raw:
        decode("x" * 10_000, 1, 1, 3, 0, b"abc")
    with pytest.raises(ConversionError) as comp:
        decode_compressed("f" * 10_000, b"GIF89a" + bytes(100))
    for exc in (raw.value, comp.value):
        assert len(str(exc)) <= MAX_MESSAGE, len(str(exc))
        assert "10000 chars" in str(exc)
    assert len(str(ConversionError("y" * 50_000))) <= MAX_MESSAGE


# ----------------------------------------------------------------------------- fuzzing
def fuzz_cases(request, default_share: int, slow_share: int) -> int:
    """This test's share of the fuzz budget: 2,000 in all by default, 10,000 when the
    run selects slow tests (``-m slow``); FCN_FUZZ_CASES scales both."""
    markexpr = (request.config.getoption("markexpr", "") or "").replace(" ", "")
    slow = "slow" in markexpr and "notslow" not in markexpr
    total = int(os.environ.get("FCN_FUZZ_CASES", 10_000 if slow else 2_000))
    share = slow_share if slow else default_share
    return max(1, round(total * share / (10_000 if slow else 2_000)))


FUZZ_SETTINGS = dict(deadline=None, database=None, derandomize=False,
                     suppress_health_check=list(HealthCheck))


def check_outcome(call, limit: int):
    """``call()`` gives an (H, W, 3) uint8 image within ``limit`` pixels or raises a
    ConversionError with a short message; anything else fails."""
    with pixels_decoded() as seen:
        try:
            out = call()
        except ConversionError as exc:
            assert 0 < len(str(exc)) <= MAX_MESSAGE, str(exc)
            assert "\n" not in str(exc)
            out = None
    assert all(n <= limit for n in seen), seen  # no decompression beyond the limit
    if out is not None:
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8
        assert out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous
        assert out.shape[0] * out.shape[1] <= limit
    return out


ENCODING_NAMES = st.one_of(st.sampled_from(sorted(ENCODINGS)),
                           st.sampled_from(["yuv422", "bayer_rggb8", "", "RGB8", "rgb8 "]),
                           st.text(max_size=300))
UINT32 = st.integers(0, 2**32 - 1)


@st.composite
def raw_fields(draw):
    """Image fields: consistent ones (some with a pixel limit just below or above the
    size), near-consistent ones (step or buffer off by a few bytes) and arbitrary ones
    (any encoding string, uint32 sizes and steps)."""
    mode = draw(st.sampled_from(["consistent", "consistent", "near", "arbitrary"]))
    if mode == "arbitrary":
        encoding = draw(ENCODING_NAMES)
        height = draw(st.one_of(st.integers(0, 64), UINT32,
                                st.sampled_from([MAX_SIDE, MAX_SIDE + 1])))
        width = draw(st.one_of(st.integers(0, 64), UINT32,
                               st.sampled_from([MAX_SIDE, MAX_SIDE + 1])))
        step = draw(UINT32)
        size = draw(st.integers(0, 2048))
    else:
        encoding = draw(st.sampled_from(sorted(ENCODINGS)))
        channels, depth, _ = ENCODINGS[encoding]
        height, width = draw(st.integers(1, 32)), draw(st.integers(1, 32))
        row = width * channels * depth
        step = row + draw(st.integers(0, 9))
        size = step * height
        if mode == "near":
            step = max(0, step + draw(st.integers(-3, 3)))
            size = max(0, size + draw(st.integers(-4, 4)))
    data = draw(st.binary(min_size=size, max_size=size)) if size < 512 else \
        np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    bigendian = draw(st.integers(0, 255))
    limit = draw(st.one_of(st.just(DEFAULT_MAX_PIXELS), st.integers(1, 1100),
                           st.just(max(1, height * width)), st.just(max(1, height * width - 1))))
    return encoding, height, width, step, bigendian, data, limit


@pytest.mark.slow
def test_fuzz_raw_image_fields(request):
    n = fuzz_cases(request, 900, 4500)
    seen = {"cases": 0, "decoded": 0}

    @settings(max_examples=n, **FUZZ_SETTINGS)
    @given(raw_fields(), st.sampled_from(["bytes", "memoryview", "array", "list"]))
    def run(fields, container):
        encoding, height, width, step, bigendian, data, limit = fields
        buf = {"bytes": data, "memoryview": memoryview(data),
               "array": np.frombuffer(data, np.uint8),
               "list": list(data[:256])}[container]
        msg = SimpleNamespace(encoding=encoding, height=height, width=width, step=step,
                              is_bigendian=bigendian, data=buf)
        out = check_outcome(lambda: decode_message(msg, max_pixels=limit), limit)
        seen["cases"] += 1
        if out is not None:
            seen["decoded"] += 1
            assert out.shape[:2] == (height, width)

    run()
    print(f"fuzz raw Image fields: {seen}")
    assert seen["cases"] >= n
    assert seen["decoded"] > n // 5, seen  # the strategy reaches the success path too


@st.composite
def mutated_compressed(draw):
    """A valid small JPEG or PNG, then mutated: bytes flipped, cut, inserted, or its
    declared size rewritten (up to 65535 x 65535 JPEG, 2^31 PNG)."""
    kind = draw(st.sampled_from(["jpeg", "png"]))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**16))
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    data = bytearray(encode_compressed(rgb, kind, quality=draw(st.integers(5, 95))))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "size", "zero_run"]))
        if not data:
            break
        if op == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            data = data[:draw(st.integers(0, len(data)))]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(max_size=64))
        elif op == "zero_run":
            i = draw(st.integers(0, len(data) - 1))
            data[i:i + draw(st.integers(1, 64))] = bytes(min(64, len(data) - i))
        else:
            big_w = draw(st.integers(0, 65535))
            big_h = draw(st.integers(0, 65535))
            if kind == "png" and len(data) >= 24:
                data[16:24] = struct.pack(">II", big_w * draw(st.integers(1, 32768)), big_h)
            elif kind == "jpeg":
                with_sof = [i for i in range(2, len(data) - 9)
                            if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2)]
                if with_sof:
                    data = bytearray(jpeg_declaring(big_w, big_h, bytes(data)))
    fmt = draw(st.one_of(st.just(kind), st.text(max_size=200)))
    limit = draw(st.one_of(st.just(DEFAULT_MAX_PIXELS), st.integers(1, 400)))
    return fmt, bytes(data), limit


@pytest.mark.slow
def test_fuzz_compressed_images(request):
    n = fuzz_cases(request, 900, 4500)
    seen = {"cases": 0, "decoded": 0, "too_large": 0}

    @settings(max_examples=n, **FUZZ_SETTINGS)
    @given(mutated_compressed())
    def run(case):
        fmt, data, limit = case
        msg = SimpleNamespace(format=fmt, data=data)
        try:
            kind, w, h = declared_size(data)
        except ConversionError:
            kind, w, h = None, 0, 0
        out = check_outcome(lambda: decode_message(msg, max_pixels=limit), limit)
        seen["cases"] += 1
        if kind and w * h > limit:
            assert out is None  # whatever the body holds, the declared size decides
            seen["too_large"] += 1
        if out is not None:
            seen["decoded"] += 1
            assert (out.shape[1], out.shape[0]) == (w, h)

    run()
    print(f"fuzz CompressedImage: {seen}")
    assert seen["cases"] >= n
    assert seen["decoded"] > n // 10 and seen["too_large"] > n // 50, seen


@st.composite
def declared_bombs(draw):
    kind = draw(st.sampled_from(["jpeg", "png"]))
    w = draw(st.integers(1, 65535))
    h = draw(st.integers(max(1, (DEFAULT_MAX_PIXELS // w) + 1), 65535)) if \
        DEFAULT_MAX_PIXELS // w < 65535 else 65535
    if kind == "png":
        w *= draw(st.sampled_from([1, 1, 7, 30000]))
        ihdr = struct.pack(">IIBBBBB", w, h, 8, draw(st.sampled_from([0, 2, 6])), 0, 0, 0)
        data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                + _png_chunk(b"IDAT", zlib.compress(bytes(draw(st.integers(0, 4096)))))
                + _png_chunk(b"IEND", b""))
    else:
        data = jpeg_declaring(w, h)
    return kind, w, h, data


@pytest.mark.slow
def test_fuzz_declared_bombs_rejected_before_decoding(request):
    n = fuzz_cases(request, 200, 1000)
    seen = {"cases": 0}

    @settings(max_examples=n, **FUZZ_SETTINGS)
    @given(declared_bombs())
    def run(case):
        kind, w, h, data = case
        assert w * h > DEFAULT_MAX_PIXELS or max(w, h) > MAX_SIDE
        with pixels_decoded() as decoded, pytest.raises(ImageTooLargeError):
            decode_compressed(kind, data)
        assert decoded == []  # no decoding
        seen["cases"] += 1

    run()
    print(f"fuzz declared bombs: {seen}")
    assert seen["cases"] >= n


def test_fuzz_case_budget_covers_the_issue(request):
    """2,000 cases by default, 10,000 under -m slow (the three fuzz tests together)."""
    total = sum(fuzz_cases(request, d, s) for d, s in ((900, 4500), (900, 4500), (200, 1000)))
    if "FCN_FUZZ_CASES" not in os.environ:
        markexpr = (request.config.getoption("markexpr", "") or "").replace(" ", "")
        slow = "slow" in markexpr and "notslow" not in markexpr
        assert total == (10_000 if slow else 2_000)
