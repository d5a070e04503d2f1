"""MCAP chunk checksums: verified with the ``mcap`` library's reader, written where a
writer left them out.

An MCAP chunk record carries the CRC-32 of its uncompressed records (0 means "not
computed").  :func:`verify_chunk_crcs` reads the file with the ``mcap`` library's
:class:`~mcap.stream_reader.StreamReader` with CRC validation (every chunk that has a CRC,
and the data section's CRC where the writer stored one).

The ``rosbags`` writer that ``bag make`` and ``bag record`` use leaves the chunk CRCs at
0, so corrupted bytes inside a chunk would go unnoticed: :func:`add_chunk_crcs` fills
them in after the bag is closed.  It finds the chunks through the ``mcap`` library's
chunk index and decompresses them with it, and writes the 4 bytes of each CRC in place
rather than rewriting the file with ``mcap.writer.Writer`` (which would compute them
too): a rewrite writes the whole recording a second time and needs its size again in
free disk, on a robot where a minute of 720p rgb8 at 30 Hz is 5 GB.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from mcap.data_stream import ReadDataStream
from mcap.exceptions import EndOfFile, InvalidMagic, McapError
from mcap.reader import make_reader
from mcap.records import Chunk, DataEnd
from mcap.stream_reader import (
    CRCValidationError,
    StreamReader,
    breakup_chunk,
    get_chunk_data_stream,
)

from fcn_perception.errors import BagError

# In a chunk record: opcode (u8) and record length (u64), then message_start_time,
# message_end_time and uncompressed_size (u64 each), then uncompressed_crc (u32).
CRC_FIELD = 1 + 8 + 3 * 8


@dataclass
class CrcCheck:
    checked: int = 0
    unchecked: int = 0  # chunks whose writer stored no CRC (0)


def _empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise BagError(f"{path} is empty; re-record the bag")


def _unreadable(path: Path, exc: Exception, chunks: int) -> BagError:
    """One message for what the ``mcap`` reader raised after ``chunks`` good chunks."""
    if isinstance(exc, InvalidMagic):
        return BagError(f"{path} is not an MCAP file (it does not start with the MCAP "
                        "magic); re-record it or pass the bag folder")
    if isinstance(exc, (EndOfFile, struct.error)):
        return BagError(f"{path} is truncated after {chunks} complete chunks; "
                        "`mcap recover` can rescue them")
    return BagError(f"{path}: unreadable after {chunks} complete chunks "
                    f"({type(exc).__name__}: {str(exc)[:120]}); the file is corrupt: "
                    "restore or re-record the bag")


def verify_chunk_crcs(path: str | Path) -> CrcCheck:
    """Check the CRC of every chunk that has one (and of the data section where one is
    stored); :class:`BagError` names the file and the first chunk that fails."""
    path = Path(path)
    _empty(path)
    result = CrcCheck()
    index = -1
    with open(path, "rb") as f:
        try:
            for record in StreamReader(f, emit_chunks=True, validate_crcs=True).records:
                if not isinstance(record, Chunk):
                    continue
                index += 1
                try:  # decompresses, checks a stored CRC and parses the records inside
                    breakup_chunk(record, validate_crc=True)
                except CRCValidationError:
                    raise
                except Exception as exc:  # whatever the decompressor makes of bad bytes
                    raise BagError(
                        f"{path}: chunk {index} (compression {record.compression or 'none'!r}) "
                        f"cannot be decoded ({type(exc).__name__}): the file is corrupt; "
                        "restore or re-record the bag") from None
                if record.uncompressed_crc:
                    result.checked += 1
                else:
                    result.unchecked += 1
        except CRCValidationError as exc:
            where = (f"chunk {index} (messages logged {exc.record.message_start_time} to "
                     f"{exc.record.message_end_time} ns)"
                     if isinstance(exc.record, Chunk) else
                     "the data section" if isinstance(exc.record, DataEnd) else "a record")
            raise BagError(
                f"{path}: {where} fails its CRC check (stored {exc.expected:08x}, computed "
                f"{exc.actual:08x}): the file is corrupt; restore or re-record the bag"
            ) from None
        except (McapError, ValueError, struct.error, MemoryError) as exc:
            raise _unreadable(path, exc, max(index, 0)) from None
    return result


def add_chunk_crcs(path: str | Path) -> int:
    """Write the CRC of every chunk that has none; returns how many were written."""
    path = Path(path)
    _empty(path)
    written = 0
    with open(path, "r+b") as f:
        try:
            summary = make_reader(f).get_summary()
        except (McapError, ValueError, struct.error) as exc:
            raise _unreadable(path, exc, 0) from None
        if summary is None:
            raise BagError(f"{path} has no summary (its writer did not close it); "
                           "`mcap recover` can rescue its chunks")
        for chunk_index in summary.chunk_indexes:
            f.seek(chunk_index.chunk_start_offset + 1 + 8)
            chunk = Chunk.read(ReadDataStream(f))
            if chunk.uncompressed_crc:
                continue
            data, size = get_chunk_data_stream(chunk)
            f.seek(chunk_index.chunk_start_offset + CRC_FIELD)
            f.write(struct.pack("<I", zlib.crc32(data.read(size))))
            written += 1
    return written
