"""MCAP chunk checksums: write them where a writer left them out, verify them before use.

An MCAP chunk record carries the CRC-32 of its uncompressed records (0 means "not
computed").  The ``rosbags`` writer that ``bag make`` and ``bag record`` use leaves it at
0, so corrupted bytes inside a chunk would go unnoticed: :func:`add_chunk_crcs` fills the
field in after the bag is closed, and :func:`verify_chunk_crcs` checks every chunk that
has one (``ros2 bag record``'s mcap plugin writes them too).

Layout (little endian): magic ``\\x89MCAP0\\r\\n``, then records ``opcode u8, length
u64, body``; a chunk (opcode 0x06) body is ``message_start_time u64, message_end_time
u64, uncompressed_size u64, uncompressed_crc u32, compression (u32 length + text),
records (u64 length + bytes)``.
"""
from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fcn_perception.errors import BagError

MAGIC = b"\x89MCAP0\r\n"
CHUNK, FOOTER = 0x06, 0x02


@dataclass
class Chunk:
    index: int
    offset: int  # of the record's opcode
    crc_offset: int
    crc: int
    compression: str
    data_offset: int
    data_size: int
    uncompressed_size: int


@dataclass
class CrcCheck:
    checked: int = 0
    unchecked: int = 0  # chunks whose writer stored no CRC (0)


def _chunks(path: Path, buf) -> Iterator[Chunk]:
    size = len(buf)
    if size < 8 or buf[:8] != MAGIC:
        raise BagError(f"{path} is not an MCAP file (it does not start with the MCAP magic); "
                       "re-record it or pass the bag folder")
    pos, index = 8, 0
    while pos + 9 <= size:
        opcode = buf[pos]
        (length,) = struct.unpack_from("<Q", buf, pos + 1)
        body = pos + 9
        if body + length > size:
            raise BagError(f"{path} is truncated: record at byte {pos} runs past the end of "
                           "the file; `mcap recover` can rescue the complete chunks")
        if opcode == CHUNK:
            if length < 40:
                raise BagError(f"{path}: chunk {index} at byte {pos} is malformed "
                               f"(record length {length}); re-record the bag")
            _, _, usize, crc = struct.unpack_from("<QQQI", buf, body)
            (clen,) = struct.unpack_from("<I", buf, body + 28)
            comp_end = body + 32 + clen
            if comp_end + 8 > body + length:
                raise BagError(f"{path}: chunk {index} at byte {pos} is malformed; "
                               "re-record the bag")
            compression = bytes(buf[body + 32:comp_end]).decode("utf-8", "replace")
            (dlen,) = struct.unpack_from("<Q", buf, comp_end)
            if comp_end + 8 + dlen > body + length:
                raise BagError(f"{path}: chunk {index} at byte {pos} holds more data than its "
                               "record; the file is corrupt: re-record the bag")
            yield Chunk(index, pos, body + 24, crc, compression, comp_end + 8, dlen, usize)
            index += 1
        elif opcode == FOOTER:
            return
        pos = body + length


def _uncompressed(path: Path, buf, chunk: Chunk) -> bytes | memoryview:
    data = memoryview(buf)[chunk.data_offset:chunk.data_offset + chunk.data_size]
    if chunk.compression == "":
        return data
    try:
        from rosbags.rosbag2.storage_mcap import DECOMPRESSORS

        out = DECOMPRESSORS[chunk.compression](bytes(data), chunk.uncompressed_size)
    except KeyError:
        raise BagError(f"{path}: chunk {chunk.index} uses compression "
                       f"{chunk.compression[:20]!r}, which the bag tools cannot read") from None
    except Exception as exc:
        raise BagError(f"{path}: chunk {chunk.index} at byte {chunk.offset} does not "
                       f"decompress ({type(exc).__name__}); the file is corrupt") from None
    finally:
        data.release()
    return out


def _mapped(path: Path, write: bool):
    f = open(path, "r+b" if write else "rb")
    try:
        if path.stat().st_size == 0:
            raise BagError(f"{path} is empty; re-record the bag")
        return f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE if write else mmap.ACCESS_READ)
    except BaseException:
        f.close()
        raise


def add_chunk_crcs(path: str | Path) -> int:
    """Write the CRC of every chunk that has none; returns how many were written."""
    path = Path(path)
    f, buf = _mapped(path, write=True)
    written = 0
    try:
        for chunk in list(_chunks(path, buf)):
            if chunk.crc:
                continue
            data = _uncompressed(path, buf, chunk)
            crc = zlib.crc32(data) & 0xFFFFFFFF
            if isinstance(data, memoryview):
                data.release()
            struct.pack_into("<I", buf, chunk.crc_offset, crc)
            written += 1
        buf.flush()
    finally:
        buf.close()
        f.close()
    return written


def verify_chunk_crcs(path: str | Path) -> CrcCheck:
    """Check the CRC of every chunk that has one; :class:`BagError` at the first mismatch."""
    path = Path(path)
    f, buf = _mapped(path, write=False)
    result = CrcCheck()
    try:
        for chunk in _chunks(path, buf):
            if not chunk.crc:
                result.unchecked += 1
                continue
            data = _uncompressed(path, buf, chunk)
            crc = zlib.crc32(data) & 0xFFFFFFFF
            if isinstance(data, memoryview):
                data.release()
            if crc != chunk.crc:
                raise BagError(
                    f"{path}: chunk {chunk.index} at byte {chunk.offset} fails its CRC check "
                    f"(stored {chunk.crc:08x}, computed {crc:08x}): the file is corrupt; "
                    "restore or re-record the bag"
                )
            result.checked += 1
    finally:
        buf.close()
        f.close()
    return result
