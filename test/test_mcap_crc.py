"""MCAP chunk CRCs: checked by the ``mcap`` library's reader, written in place by
``add_chunk_crcs``, and in agreement with the hand-written parser they replaced (kept
here, as the reference) on real bags: CamVid frames written by ``bag make`` (several
chunks), one with zstd chunks, and copies with a byte flipped inside each chunk."""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

from fcn_perception.bag import typestore as T
from fcn_perception.bag.make import make_bag
from fcn_perception.bag.mcap_crc import CRC_FIELD, add_chunk_crcs, verify_chunk_crcs
from fcn_perception.bag.read import Bag
from fcn_perception.errors import BagError
from fcn_perception.evaluation.camvid import CamVid

SAMPLE = Path(__file__).resolve().parent.parent / "fcn_perception" / "data" / "camvid_sample"


# ------------------------------------------------- the hand-written parser (reference)
def _ref_chunks(buf: bytes):
    """``(index, record offset, crc offset, crc, compression, data offset, data size,
    uncompressed size)`` of every chunk, walking the records as the old module did."""
    assert buf[:8] == b"\x89MCAP0\r\n"
    pos, index = 8, 0
    while pos + 9 <= len(buf):
        opcode = buf[pos]
        (length,) = struct.unpack_from("<Q", buf, pos + 1)
        body = pos + 9
        if opcode == 0x06:
            _, _, usize, crc = struct.unpack_from("<QQQI", buf, body)
            (clen,) = struct.unpack_from("<I", buf, body + 28)
            comp_end = body + 32 + clen
            (dlen,) = struct.unpack_from("<Q", buf, comp_end)
            yield (index, pos, body + 24, crc, bytes(buf[body + 32:comp_end]).decode(),
                   comp_end + 8, dlen, usize)
            index += 1
        elif opcode == 0x02:  # footer
            return
        pos = body + length


def _ref_crc(buf, chunk) -> int:
    _, _, _, _, compression, start, size, usize = chunk
    data = bytes(buf[start:start + size])
    if compression:
        from rosbags.rosbag2.storage_mcap import DECOMPRESSORS

        data = DECOMPRESSORS[compression](data, usize)
    return zlib.crc32(data) & 0xFFFFFFFF


def ref_verify(path: Path) -> tuple[int, int, int | None]:
    """``(checked, unchecked, index of the first chunk whose CRC fails or None)``."""
    buf = path.read_bytes()
    checked = unchecked = 0
    for chunk in _ref_chunks(buf):
        if not chunk[3]:
            unchecked += 1
            continue
        try:
            crc = _ref_crc(buf, chunk)
        except Exception:  # the old module: "chunk N ... does not decompress"
            return checked, unchecked, chunk[0]
        if crc != chunk[3]:
            return checked, unchecked, chunk[0]
        else:
            checked += 1
    return checked, unchecked, None


def ref_add(path: Path) -> int:
    buf = bytearray(path.read_bytes())
    written = 0
    for chunk in list(_ref_chunks(buf)):
        if not chunk[3]:
            struct.pack_into("<I", buf, chunk[2], _ref_crc(buf, chunk))
            written += 1
    path.write_bytes(bytes(buf))
    return written


# ----------------------------------------------------------------------------- bags
def mcap_of(bag: Path) -> Path:
    return next(bag.glob("*.mcap"))


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    """The .mcap files of a plain bag (``bag make``: CRCs added) and of a zstd one
    (rosbags writer, CRCs still 0), six CamVid frames and labels each."""
    root = tmp_path_factory.mktemp("mcap_crc")
    plain = make_bag(SAMPLE, "val.txt", root / "plain", limit=6).path
    zstd = root / "zstd"
    data, store = CamVid(SAMPLE, "val.txt"), T.get_typestore()
    writer = Writer(zstd, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection("/camera/image_raw", T.IMAGE, typestore=store)
        for i in range(6):
            msg = T.image_msg(data.load(i % len(data))[0], 1 + i, "camera")
            writer.write(conn, 1 + i, store.serialize_cdr(msg, T.IMAGE))
    return {"plain": mcap_of(plain), "zstd": mcap_of(zstd)}


def zeroed_copy(src: Path, dst: Path) -> Path:
    """``src`` with every chunk's CRC set to 0 (as the rosbags writer leaves them)."""
    buf = bytearray(src.read_bytes())
    for chunk in list(_ref_chunks(buf)):
        buf[chunk[2]:chunk[2] + 4] = bytes(4)
    dst.write_bytes(bytes(buf))
    return dst


# ----------------------------------------------------------------------------- tests
def test_good_bags_agree(bags, tmp_path):
    plain = bags["plain"]
    new = verify_chunk_crcs(plain)
    assert (new.checked, new.unchecked, None) == ref_verify(plain)
    assert new.checked >= 3 and new.unchecked == 0  # several chunks, all with CRCs
    # where add_chunk_crcs writes: the field the reference parser found
    assert all(c[2] == c[1] + CRC_FIELD for c in _ref_chunks(plain.read_bytes()))
    zstd = bags["zstd"]
    assert ref_verify(zstd)[1] >= 2  # written without CRCs
    new = verify_chunk_crcs(zstd)
    assert (new.checked, new.unchecked, None) == ref_verify(zstd)


@pytest.mark.parametrize("kind", ["plain", "zstd"])
def test_crcs_written_in_place_as_the_reference_wrote_them(bags, kind, tmp_path):
    """From CRCs at 0, the library-based writer and the reference produce the same bytes
    (for the plain bag: the bytes ``bag make`` wrote); the bag still reads."""
    src = bags[kind]
    new, old = zeroed_copy(src, tmp_path / "new.mcap"), zeroed_copy(src, tmp_path / "old.mcap")
    n = add_chunk_crcs(new)
    assert n == ref_add(old) >= 2
    assert new.read_bytes() == old.read_bytes()
    if kind == "plain":
        assert new.read_bytes() == src.read_bytes()
    assert add_chunk_crcs(new) == 0  # nothing left to write
    assert verify_chunk_crcs(new).checked == n
    folder = tmp_path / "bag"
    folder.mkdir()
    shutil.copyfile(src.parent / "metadata.yaml", folder / "metadata.yaml")
    shutil.copyfile(new, folder / src.name)
    with Bag(folder) as bag:
        topic = bag.image_topic()
        assert sum(1 for _ in bag.raw_messages([topic])) == 6


@pytest.mark.parametrize("kind", ["plain", "zstd"])
def test_a_flipped_byte_in_any_chunk_fails_both_at_that_chunk(bags, kind, tmp_path):
    src = bags[kind]
    good = src.read_bytes()
    if kind == "zstd":  # with CRCs, so the flips can be caught
        src = tmp_path / "with_crcs.mcap"
        src.write_bytes(good)
        add_chunk_crcs(src)
        good = src.read_bytes()
    chunks = list(_ref_chunks(good))
    assert len(chunks) >= 2
    copy = tmp_path / "flipped.mcap"
    for index, _, _, _, compression, start, size, _ in chunks:
        data = bytearray(good)
        data[start + size // 2] ^= 0x5A  # the middle of the chunk's (compressed) data
        copy.write_bytes(bytes(data))
        assert ref_verify(copy)[2] == index
        with pytest.raises(BagError) as err:
            verify_chunk_crcs(copy)
        message = str(err.value)
        assert str(copy) in message and f"chunk {index} " in message, message
        assert "corrupt" in message and ("CRC" in message or compression), message


def test_bad_files_are_one_message(bags, tmp_path):
    good = bags["plain"].read_bytes()
    cases = {
        "empty.mcap": (b"", "is empty"),
        "not.mcap": (b"PK\x03\x04" + good[8:], "not an MCAP file"),
        "cut.mcap": (good[:len(good) * 2 // 3], "truncated"),
    }
    for name, (data, expect) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(BagError, match=expect) as err:
            verify_chunk_crcs(path)
        assert name in str(err.value)
