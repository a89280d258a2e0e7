"""The on-disk sorted-postings segment format, and the numba kernels that search and merge segments.

A segment is an immutable, sorted run of postings (hash, value), where `hash` is a fingerprint hash
(uint32) and `value` is a frame address (uint32, see `embedded.py`). Rows are sorted by (hash, value) and
unique. The byte layout (little-endian, every section starts on an 8-byte boundary):

    header      64 bytes      `_HEADER` below: magic, versions, n_rows, bit widths, value range, CRC32 of
                              each section
    directory   dir dtype[2**dir_bits + 1]
                              directory[p] = first row whose hash prefix is >= p, directory[-1] = n_rows;
                              the prefix is the top `dir_bits` of the `hash_bits` significant hash bits
    low bits    uint32 words  the remaining `low_bits = hash_bits - dir_bits` bits of each hash, packed
                              back to back: row r holds bits [r * low_bits, (r + 1) * low_bits) of the
                              section read as one little-endian bit string
    values      uint32 words  each row's value minus `value_min`, packed the same way in `value_bits` bits,
                              the bit length of `value_max - value_min`

Each packed section ends with at least one spare zero word, so a kernel reads any row with two aligned
32-bit loads (`_field`). `hash_bits` is the bit length of the largest hash in the segment (at most 32),
and `value_bits` that of the segment's value span: a track's own level-0 segment spans a few thousand
frames (about 14 bits), a compacted shard of 165 tracks about 22 bits. `dir_bits` is chosen from the
row count so that the file is smallest (see `choose_dir_bits`): about 4.5-5 bytes per posting where
byte-aligned fields took 6.

A reader maps the file (`np.memmap`): the OS page cache, not the process, holds the index. A reader refuses
an unknown magic or format version with `StoreFormatError`, and a damaged file with `StoreError`.

Kernels sit together at the bottom of this module, each beside the plain NumPy reference that
`tests/store/test_segments.py` compares it with.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numba import njit

from tunescout.engine.errors import StoreError, StoreFormatError

SEGMENT_MAGIC = b"TSSEGMT\x00"
# bump on any change of the byte layout; readers refuse versions they do not know. Version 1 stored the
# low bits in whole bytes and values as plain uint32 (about 6 bytes per posting); version 2 packs both.
SEGMENT_FORMAT_VERSION = 2
MAX_HASH_BITS = 32  # hashes are uint32
MAX_DIR_BITS = 24  # a directory of 2**24 + 1 entries (64 MiB) is the largest worth its bytes
DIR_GROWTH_SHARE = 16  # extra directory bits may take up to 1/16 of the row data (shorter searches) ...
DIR_GROWTH_MAX_COST = 0.01  # ... and may grow the file by at most this share over the smallest layout
TOUCH_MIN_NBYTES = 8 << 20  # bytes: segments above this miss the caches; kernels then batch their loads
ALIGN = 8  # bytes; every section starts aligned so the mapped arrays are aligned for the kernels

# magic, format version, fingerprint version, n_rows, hash_bits, dir_bits, value_bits, dir itemsize,
# value_min, value_max, CRC32 of directory, low bits and values, then CRC32 of the preceding header bytes
_HEADER = struct.Struct("<8sIIQBBBBIIIIII")
HEADER_NBYTES = 64
_HEADER_PAD = b"\x00" * (HEADER_NBYTES - _HEADER.size)
_FIXED = struct.Struct("<8sI")  # the part of the header every future version must keep: magic, version


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def packed_words(n_rows: int, bits: int) -> int:
    """uint32 words of a section packing `n_rows` fields of `bits` bits: the bits rounded up to whole
    words, plus one spare word so the two-word load of the last row stays inside (at least two words)."""
    return max(2, -(-n_rows * bits // 32) + 1)


def value_span(value_min: int, value_max: int) -> int:
    """Bits that hold every value - value_min for values in [value_min, value_max] (0 for one value)."""
    if not 0 <= value_min <= value_max < (1 << 32):
        raise ValueError(f"bad value range [{value_min}, {value_max}]")
    return (value_max - value_min).bit_length()


@dataclass(frozen=True)
class SegmentLayout:
    """Byte offsets, widths and dtypes of every section of a segment with `n_rows` rows whose values lie in
    [value_min, value_max].

    Invariants: 0 <= dir_bits <= hash_bits <= 32; 0 <= value_min <= value_max < 2**32; sections are 8-byte
    aligned; `total_nbytes` is the exact file size.
    """

    n_rows: int
    hash_bits: int
    dir_bits: int
    value_min: int = 0
    value_max: int = (1 << 32) - 1

    @classmethod
    def for_rows(
        cls, n_rows: int, hash_bits: int, value_min: int = 0, value_max: int = (1 << 32) - 1
    ) -> SegmentLayout:
        dir_bits = choose_dir_bits(n_rows, hash_bits, value_span(value_min, value_max))
        return cls(n_rows, hash_bits, dir_bits, value_min, value_max)

    @property
    def low_bits(self) -> int:
        return self.hash_bits - self.dir_bits

    @property
    def value_bits(self) -> int:
        return value_span(self.value_min, self.value_max)

    @property
    def dir_dtype(self) -> np.dtype:
        # uint32 row numbers are enough below 2**32 rows; a full shard can exceed that
        return np.dtype(np.uint32) if self.n_rows < (1 << 32) else np.dtype(np.uint64)

    @property
    def dir_entries(self) -> int:
        return (1 << self.dir_bits) + 1

    @property
    def dir_offset(self) -> int:
        return HEADER_NBYTES

    @property
    def dir_nbytes(self) -> int:
        return self.dir_entries * self.dir_dtype.itemsize

    @property
    def low_offset(self) -> int:
        return _align(self.dir_offset + self.dir_nbytes)

    @property
    def low_nbytes(self) -> int:
        return packed_words(self.n_rows, self.low_bits) * 4

    @property
    def values_offset(self) -> int:
        return _align(self.low_offset + self.low_nbytes)

    @property
    def values_nbytes(self) -> int:
        return packed_words(self.n_rows, self.value_bits) * 4

    @property
    def total_nbytes(self) -> int:
        return self.values_offset + self.values_nbytes


def choose_dir_bits(n_rows: int, hash_bits: int, value_bits: int = 32) -> int:
    """Directory bits for a segment of `n_rows` rows whose hashes have `hash_bits` significant bits.

    Rule: take the layout with the fewest bytes (each directory bit costs an entry per bucket and saves a
    low bit per row: the optimum is near 32 rows per bucket); then add directory bits while the directory
    stays within 1/16 of the row data and the file within 1 % of the smallest (each bit halves the binary
    search). Examples with 32-bit hashes and 22-bit values: 1k rows -> 8.5 B/row, 4M rows -> 4.5 B/row,
    100M rows -> 4.1 B/row.
    """
    if not 0 <= hash_bits <= MAX_HASH_BITS:
        raise ValueError(f"hash_bits must be in 0..{MAX_HASH_BITS}, got {hash_bits}")
    top = min(hash_bits, MAX_DIR_BITS)
    value_max = (1 << value_bits) - 1

    def layout(d: int) -> SegmentLayout:
        return SegmentLayout(n_rows, hash_bits, d, 0, value_max)

    best = min((layout(d) for d in range(top + 1)), key=lambda x: (x.total_nbytes, -x.dir_bits))
    dir_bits = best.dir_bits
    while dir_bits < top:
        grown = layout(dir_bits + 1)
        row_nbytes = grown.low_nbytes + grown.values_nbytes
        if grown.dir_nbytes * DIR_GROWTH_SHARE > row_nbytes or grown.total_nbytes > best.total_nbytes * (
            1 + DIR_GROWTH_MAX_COST
        ):
            break
        dir_bits += 1
    return dir_bits


def dense_dir_bits(n_rows: int, hash_bits: int) -> int:
    """Directory bits giving about one row per bucket: for small segments searched far more often than
    stored (level 0, held in memory), where a lookup then costs two loads instead of a binary search.
    Costs 2-4 bytes per row more than `choose_dir_bits`.
    """
    return min(hash_bits, MAX_DIR_BITS, max(0, n_rows.bit_length() - 1))


def hash_bits_of(max_hash: int) -> int:
    """Significant bits of the largest hash (at least 1, so a segment of zeros still has a layout)."""
    return max(1, int(max_hash).bit_length())


# -- writing -------------------------------------------------------------------------------------------


class _Sink(Protocol):
    def write_at(self, offset: int, data: bytes | memoryview) -> None: ...


class _MemorySink:
    def __init__(self, nbytes: int) -> None:
        self.buffer = bytearray(nbytes)

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        self.buffer[offset : offset + len(data)] = data


class _FileSink:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:  # pwrite may write less than asked
            written = os.pwrite(self.fd, view, offset)
            view = view[written:]
            offset += written


class _PackedSection:
    """Writes one packed section chunk by chunk: whole words go out as soon as they are complete, the
    partly filled last word is carried to the next chunk. Keeps the section's running CRC32."""

    def __init__(self, sink: _Sink, offset: int, bits: int, n_words: int) -> None:
        self._sink = sink
        self._offset = offset
        self._bits = bits
        self._n_words = n_words
        self._bit_pos = 0  # bits written so far (those of the carried word included)
        self._carry = np.uint32(0)
        self.crc = 0

    def append(self, fields: np.ndarray, minus: int) -> None:
        """Pack `fields - minus` (uint32 fields, each result below 2**bits)."""
        n = fields.shape[0]
        if n == 0 or self._bits == 0:
            return
        used = self._bit_pos & 31
        end_bit = used + n * self._bits
        words = np.zeros((end_bit >> 5) + 2, np.uint32)
        words[0] = self._carry
        pack_fields(fields, minus, self._bits, used, words)
        full = end_bit >> 5
        self._write(self._bit_pos >> 5, words[:full])
        self._carry = words[full]
        self._bit_pos += n * self._bits

    def finish(self) -> None:
        """Write the carried word and the zero words after it, up to the section's end."""
        first = self._bit_pos >> 5
        tail = np.zeros(self._n_words - first, np.uint32)
        tail[0] = self._carry
        self._write(first, tail)

    def _write(self, word: int, words: np.ndarray) -> None:
        if words.shape[0]:
            data = memoryview(words).cast("B")
            self._sink.write_at(self._offset + word * 4, data)
            self.crc = zlib.crc32(data, self.crc)


class SegmentWriter:
    """Writes one segment from sorted chunks of rows, in order, holding only one chunk in memory.

    The row count and the value range must be known up front (they fix the layout); `finish` checks that
    exactly that many rows arrived. Every chunk is checked: rows strictly increasing by (hash, value),
    continuing after the previous chunk, hashes below 2**hash_bits, values inside the announced range.
    `dir_bits` overrides `choose_dir_bits` (tests use it to reach every layout without huge segments).
    """

    def __init__(
        self,
        sink: _Sink,
        n_rows: int,
        hash_bits: int,
        fingerprint_version: int,
        dir_bits: int | None = None,
        value_range: tuple[int, int] = (0, (1 << 32) - 1),
    ) -> None:
        if dir_bits is not None and not 0 <= dir_bits <= min(hash_bits, MAX_DIR_BITS):
            raise ValueError(f"dir_bits must be in 0..min(hash_bits, {MAX_DIR_BITS}), got {dir_bits}")
        self._sink = sink
        value_min, value_max = value_range
        if dir_bits is None:
            self.layout = SegmentLayout.for_rows(n_rows, hash_bits, value_min, value_max)
        else:
            self.layout = SegmentLayout(n_rows, hash_bits, dir_bits, value_min, value_max)
        layout = self.layout
        self._fingerprint_version = fingerprint_version
        self._rows_written = 0
        self._next_prefix = 0  # first directory entry not yet written
        self._last_row: tuple[int, int] | None = None
        self._crc_dir = 0
        self._low = _PackedSection(sink, layout.low_offset, layout.low_bits, layout.low_nbytes // 4)
        self._values = _PackedSection(
            sink, layout.values_offset, layout.value_bits, layout.values_nbytes // 4
        )

    def append(self, hashes: np.ndarray, values: np.ndarray) -> None:
        """Append rows (hashes: uint32, values: uint32, same length), sorted and after the previous rows."""
        layout = self.layout
        n = hashes.shape[0]
        if n == 0:
            return
        if hashes.dtype != np.uint32 or values.dtype != np.uint32 or values.shape[0] != n:
            raise ValueError("hashes and values must be uint32 arrays of the same length")
        if self._rows_written + n > layout.n_rows:
            raise ValueError(f"more rows than the {layout.n_rows} announced")
        if int(hashes[-1]) >> layout.hash_bits:
            raise ValueError(f"hash {int(hashes[-1]):#x} does not fit hash_bits={layout.hash_bits}")
        if not _strictly_increasing(hashes, values):
            raise ValueError("rows must be strictly increasing by (hash, value)")
        lowest, highest = int(values.min()), int(values.max())
        if lowest < layout.value_min or highest > layout.value_max:
            raise ValueError(
                f"values [{lowest}, {highest}] outside the announced range "
                f"[{layout.value_min}, {layout.value_max}]"
            )
        first = (int(hashes[0]), int(values[0]))
        if self._last_row is not None and first <= self._last_row:
            raise ValueError("rows must continue after the previous chunk")
        self._last_row = (int(hashes[-1]), int(values[-1]))

        prefixes = hashes.astype(np.int64) >> layout.low_bits  # int64: a shift by 32 is defined
        last_prefix = int(prefixes[-1])
        # directory[p] = rows before the first row with prefix >= p; known for every p <= last_prefix now
        self._write_directory(self._next_prefix, last_prefix + 1, prefixes)
        self._next_prefix = last_prefix + 1

        if layout.low_bits:
            self._low.append(hashes & np.uint32((1 << layout.low_bits) - 1), 0)
        self._values.append(values, layout.value_min)
        self._rows_written += n

    def _write_directory(self, start: int, stop: int, prefixes: np.ndarray | None) -> None:
        layout = self.layout
        piece = 1 << 20  # entries per write: bounds the temporary arrays for a 2**24-entry directory
        for lo in range(start, stop, piece):
            hi = min(stop, lo + piece)
            if prefixes is None:
                entries = np.full(hi - lo, self._rows_written, dtype=layout.dir_dtype)
            else:
                wanted = np.arange(lo, hi, dtype=np.int64)
                entries = (self._rows_written + np.searchsorted(prefixes, wanted, side="left")).astype(
                    layout.dir_dtype
                )
            data = memoryview(entries).cast("B")
            self._sink.write_at(layout.dir_offset + lo * layout.dir_dtype.itemsize, data)
            self._crc_dir = zlib.crc32(data, self._crc_dir)

    def finish(self) -> None:
        """Write the rest of the directory, the packed sections' last words and the header; raises if
        fewer rows arrived than announced."""
        layout = self.layout
        if self._rows_written != layout.n_rows:
            raise ValueError(f"{self._rows_written} rows written, {layout.n_rows} announced")
        self._write_directory(self._next_prefix, layout.dir_entries, None)
        self._next_prefix = layout.dir_entries
        self._low.finish()
        self._values.finish()
        crcs = (self._crc_dir, self._low.crc, self._values.crc)
        self._sink.write_at(0, _pack_header(layout, self._fingerprint_version, crcs))


def _pack_header(layout: SegmentLayout, fingerprint_version: int, crcs: tuple[int, int, int]) -> bytes:
    fields = (
        SEGMENT_MAGIC,
        SEGMENT_FORMAT_VERSION,
        fingerprint_version,
        layout.n_rows,
        layout.hash_bits,
        layout.dir_bits,
        layout.value_bits,
        layout.dir_dtype.itemsize,
        layout.value_min,
        layout.value_max,
        *crcs,
    )
    body = _HEADER.pack(*fields, 0)[:-4]
    return body + struct.pack("<I", zlib.crc32(body)) + _HEADER_PAD


def _strictly_increasing(hashes: np.ndarray, values: np.ndarray) -> bool:
    if hashes.shape[0] < 2:
        return True
    h0, h1 = hashes[:-1], hashes[1:]
    return bool(np.all((h1 > h0) | ((h1 == h0) & (values[1:] > values[:-1]))))


def _value_range(values: np.ndarray) -> tuple[int, int]:
    # the tightest range of `values` (0, 0 for none)
    if values.shape[0] == 0:
        return 0, 0
    return int(values.min()), int(values.max())


def encode_segment(
    hashes: np.ndarray,
    values: np.ndarray,
    *,
    fingerprint_version: int,
    hash_bits: int | None = None,
    dir_bits: int | None = None,
) -> bytes:
    """Serialise sorted unique rows (uint32 hashes, uint32 values) as one segment, in memory.

    `hash_bits` defaults to the bit length of the largest hash, the value range is the values' own.
    Same bytes as `write_segment_file`.
    """
    if hash_bits is None:
        hash_bits = hash_bits_of(int(hashes[-1])) if hashes.shape[0] else 1
    n_rows = int(hashes.shape[0])
    value_min, value_max = _value_range(values)
    if dir_bits is None:
        layout = SegmentLayout.for_rows(n_rows, hash_bits, value_min, value_max)
    else:
        layout = SegmentLayout(n_rows, hash_bits, dir_bits, value_min, value_max)
    sink = _MemorySink(layout.total_nbytes)
    writer = SegmentWriter(
        sink, n_rows, hash_bits, fingerprint_version, layout.dir_bits, (value_min, value_max)
    )
    # in pieces: appending packs through several row-sized temporaries (a 3-hour track's 3.8 M rows at
    # once held 77 MB of them)
    for lo in range(0, n_rows, ENCODE_PIECE_ROWS):
        writer.append(hashes[lo : lo + ENCODE_PIECE_ROWS], values[lo : lo + ENCODE_PIECE_ROWS])
    writer.finish()
    return bytes(sink.buffer)


ENCODE_PIECE_ROWS = 1 << 19


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentFile:
    """Writes a segment to `path` (which should end in `.tmp`) in chunks; `finish` fsyncs it.

    Use as a context manager: leaving the block by an exception closes and removes the partial file.
    """

    def __init__(
        self,
        path: Path,
        n_rows: int,
        hash_bits: int,
        fingerprint_version: int,
        dir_bits: int | None = None,
        value_range: tuple[int, int] = (0, (1 << 32) - 1),
    ) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._writer = SegmentWriter(
                _FileSink(self._fd), n_rows, hash_bits, fingerprint_version, dir_bits, value_range
            )
        except BaseException:
            os.close(self._fd)
            path.unlink(missing_ok=True)
            raise
        os.ftruncate(self._fd, self._writer.layout.total_nbytes)  # gaps between sections read as zeros

    @property
    def layout(self) -> SegmentLayout:
        return self._writer.layout

    def append(self, hashes: np.ndarray, values: np.ndarray) -> None:
        self._writer.append(hashes, values)

    def finish(self) -> None:
        self._writer.finish()
        os.fsync(self._fd)  # data durable before the caller renames the file into place
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> SegmentFile:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            if exc_type is not None:
                self.path.unlink(missing_ok=True)


def write_segment_file(
    path: Path,
    hashes: np.ndarray,
    values: np.ndarray,
    *,
    fingerprint_version: int,
    hash_bits: int | None = None,
    dir_bits: int | None = None,
) -> SegmentLayout:
    """Write sorted unique rows to `path` in one go (fsynced); the bytes equal `encode_segment`'s."""
    if hash_bits is None:
        hash_bits = hash_bits_of(int(hashes[-1])) if hashes.shape[0] else 1
    n_rows = int(hashes.shape[0])
    with SegmentFile(path, n_rows, hash_bits, fingerprint_version, dir_bits, _value_range(values)) as out:
        out.append(hashes, values)
        out.finish()
        return out.layout


# -- reading -------------------------------------------------------------------------------------------


def _readonly(array: np.ndarray) -> np.ndarray:
    # plain read-only ndarrays: one numba signature for mapped files and in-memory segments alike
    view = np.asarray(array).view(type=np.ndarray)
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class Segment:
    """A readable segment: the directory and the two packed sections as read-only views of its bytes.

    Invariant: the sections describe rows strictly sorted by (hash, value) (checked when written; the CRCs
    detect later damage, see `verify`). Read rows with `hashes` and `values`, or in kernels with
    `_field(low_words, layout.low_bits, row)` and `layout.value_min + _field(value_words, ...)`.
    """

    source: str  # file path or a description, for messages
    layout: SegmentLayout
    fingerprint_version: int
    directory: np.ndarray
    low_words: np.ndarray  # uint32: the packed low hash bits
    value_words: np.ndarray  # uint32: the packed values minus value_min
    crcs: tuple[int, int, int]

    @property
    def n_rows(self) -> int:
        return self.layout.n_rows

    @property
    def nbytes(self) -> int:
        return self.layout.total_nbytes

    @property
    def is_large(self) -> bool:
        """Larger than the CPU caches: lookups then use the kernels' touch passes."""
        return self.layout.total_nbytes > TOUCH_MIN_NBYTES

    @classmethod
    def from_buffer(
        cls, buffer: np.ndarray, *, source: str, expected_fingerprint_version: int | None = None
    ) -> Segment:
        """Parse a segment held in `buffer` (uint8 array: a memory map or bytes); no copy is made."""
        raw = bytes(buffer[:HEADER_NBYTES])
        if len(raw) < _FIXED.size or raw[:8] != SEGMENT_MAGIC:
            raise StoreFormatError(
                f"{source} is not a tunescout segment (bad magic); remove it or restore it from a backup"
            )
        _, version = _FIXED.unpack_from(raw)
        if version != SEGMENT_FORMAT_VERSION:
            raise StoreFormatError(
                f"{source} has segment format version {version}; this tunescout reads version "
                f"{SEGMENT_FORMAT_VERSION}. Open it with the tunescout release that wrote it, or re-ingest."
            )
        if len(raw) < HEADER_NBYTES:
            raise StoreError(f"{source} is truncated: {len(raw)} bytes, shorter than its header")
        fields = _HEADER.unpack_from(raw)
        (_, _, fingerprint_version, n_rows, hash_bits, dir_bits, value_bits, dir_itemsize) = fields[:8]
        value_min, value_max = fields[8], fields[9]
        crcs = (fields[10], fields[11], fields[12])
        if zlib.crc32(raw[: _HEADER.size - 4]) != fields[13]:
            raise StoreError(f"{source} is damaged: header checksum mismatch")
        if expected_fingerprint_version is not None and fingerprint_version != expected_fingerprint_version:
            raise StoreFormatError(
                f"{source} holds fingerprints of version {fingerprint_version}; this store expects version "
                f"{expected_fingerprint_version}. Re-ingest the tracks with the current tunescout."
            )
        if not (
            0 <= dir_bits <= hash_bits <= MAX_HASH_BITS
            and dir_bits <= MAX_DIR_BITS
            and value_min <= value_max
        ):
            raise StoreFormatError(
                f"{source} has an unsupported layout: hash_bits={hash_bits}, dir_bits={dir_bits}, "
                f"values [{value_min}, {value_max}]"
            )
        layout = SegmentLayout(n_rows, hash_bits, dir_bits, value_min, value_max)
        if value_bits != layout.value_bits or dir_itemsize != layout.dir_dtype.itemsize:
            raise StoreFormatError(
                f"{source} has an unsupported layout: value bits {value_bits}, dir itemsize {dir_itemsize}"
            )
        if buffer.shape[0] != layout.total_nbytes:
            raise StoreError(
                f"{source} is damaged: {buffer.shape[0]} bytes, its header announces {layout.total_nbytes}"
            )
        directory = buffer[layout.dir_offset : layout.dir_offset + layout.dir_nbytes].view(layout.dir_dtype)
        low = buffer[layout.low_offset : layout.low_offset + layout.low_nbytes].view(np.uint32)
        values = buffer[layout.values_offset : layout.values_offset + layout.values_nbytes].view(np.uint32)
        return cls(
            source, layout, fingerprint_version, _readonly(directory), _readonly(low), _readonly(values), crcs
        )

    @classmethod
    def from_bytes(
        cls, data: bytes, *, source: str, expected_fingerprint_version: int | None = None
    ) -> Segment:
        """Parse an in-memory segment (a level-0 BLOB); copies once so the arrays are aligned."""
        buffer = np.frombuffer(data, dtype=np.uint8).copy()
        return cls.from_buffer(
            buffer, source=source, expected_fingerprint_version=expected_fingerprint_version
        )

    @classmethod
    def open_file(cls, path: Path, *, expected_fingerprint_version: int | None = None) -> Segment:
        """Map a segment file read-only. Pages are read on demand and cached by the OS, not the process."""
        try:
            size = path.stat().st_size
            if size == 0:
                raise StoreError(f"{path} is empty: damaged segment")
            buffer = np.memmap(path, dtype=np.uint8, mode="r", shape=(size,))
        except OSError as exc:
            raise StoreError(f"cannot map segment {path}: {exc}") from exc
        return cls.from_buffer(
            buffer, source=str(path), expected_fingerprint_version=expected_fingerprint_version
        )

    def verify(self) -> None:
        """Recompute the CRC32 of every section (reads the whole segment); raises StoreError on damage."""
        found = tuple(
            zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))
            for a in (self.directory, self.low_words, self.value_words)
        )
        if found != self.crcs:
            raise StoreError(f"{self.source} is damaged: section checksum mismatch; restore it from a backup")

    def find_ranges(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row range [starts[i], ends[i]) of each query hash (uint32) in this segment (int64 arrays)."""
        starts = np.empty(queries.shape[0], dtype=np.int64)
        ends = np.empty(queries.shape[0], dtype=np.int64)
        find_ranges(
            self.directory,
            self.low_words,
            self.layout.low_bits,
            self.layout.hash_bits,
            queries,
            starts,
            ends,
            self.is_large,
        )
        return starts, ends

    def hashes(self, row_start: int = 0, row_end: int | None = None) -> np.ndarray:
        """Full hashes (uint32) of rows [row_start, row_end), rebuilt from the directory and the low bits."""
        row_end = self.n_rows if row_end is None else row_end
        self._check_rows(row_start, row_end)
        out = np.empty(max(0, row_end - row_start), dtype=np.uint32)
        decode_hashes(self.directory, self.low_words, self.layout.low_bits, row_start, row_end, out)
        return out

    def values(self, row_start: int = 0, row_end: int | None = None) -> np.ndarray:
        """Values (uint32) of rows [row_start, row_end), unpacked."""
        row_end = self.n_rows if row_end is None else row_end
        out = np.empty(max(0, row_end - row_start), dtype=np.uint32)
        self._check_rows(row_start, row_end)
        if row_end > row_start:
            unpack_fields(
                self.value_words, self.layout.value_bits, self.layout.value_min, row_start, row_end, out
            )
        return out

    def _check_rows(self, row_start: int, row_end: int) -> None:
        if row_end > row_start and not 0 <= row_start <= row_end <= self.n_rows:
            raise IndexError(f"rows [{row_start}, {row_end}) outside a segment of {self.n_rows} rows")

    def count_in_intervals(self, starts: np.ndarray, ends: np.ndarray) -> int:
        """Rows whose value lies in any interval [starts[i], ends[i]) (intervals sorted and disjoint)."""
        layout = self.layout
        return int(
            count_in_intervals(
                self.value_words, layout.value_bits, layout.value_min, self.n_rows, starts, ends
            )
        )


# -- merging -------------------------------------------------------------------------------------------


def count_surviving_rows(segments: Sequence[Segment], dead_starts: np.ndarray, dead_ends: np.ndarray) -> int:
    """Rows of `segments` whose value is outside every dead interval [dead_starts[i], dead_ends[i])."""
    total = sum(s.n_rows for s in segments)
    if dead_starts.shape[0] == 0:
        return total
    return total - sum(s.count_in_intervals(dead_starts, dead_ends) for s in segments)


def merge_segments(
    segments: Sequence[Segment],
    path: Path,
    *,
    fingerprint_version: int,
    dead_starts: np.ndarray,
    dead_ends: np.ndarray,
    chunk_rows: int = 1 << 20,
) -> SegmentLayout | None:
    """Merge `segments` into one segment file at `path` (fsynced), dropping rows whose value lies in a dead
    interval (deleted tracks). Returns the layout written, or None (no file) when no row survives.

    Memory: about 32 bytes per row of one chunk (`chunk_rows` rows on average), whatever the inputs' size:
    the hash space is cut into ranges and each range is merged from the mapped inputs with `merge_runs`.
    Each input's checksums are verified first, so damage is reported instead of copied into a fresh file.
    Raises StoreError if the inputs are not sorted or share a row (both mean damage).
    """
    dead_starts = np.ascontiguousarray(dead_starts, dtype=np.uint32)
    dead_ends = np.ascontiguousarray(dead_ends, dtype=np.uint32)
    for segment in segments:
        segment.verify()
    n_out = count_surviving_rows(segments, dead_starts, dead_ends)
    if n_out == 0:
        return None
    hash_bits = max(s.layout.hash_bits for s in segments)
    value_range = (min(s.layout.value_min for s in segments), max(s.layout.value_max for s in segments))
    total_in = sum(s.n_rows for s in segments)
    chunk_bits = min(hash_bits, max(0, (total_in // max(1, chunk_rows)).bit_length()))
    bounds = (np.arange((1 << chunk_bits) + 1, dtype=np.uint64) << np.uint64(hash_bits - chunk_bits)).astype(
        np.int64
    )
    # first row of each chunk's hash range in each input; the last bound (2**hash_bits) maps to n_rows
    starts_per_segment = []
    for segment in segments:
        queries = bounds[:-1].astype(np.uint32)
        starts, _ = segment.find_ranges(queries)
        starts_per_segment.append(np.append(starts, segment.n_rows))

    written = 0
    with SegmentFile(path, n_out, hash_bits, fingerprint_version, None, value_range) as out:
        for chunk in range(1 << chunk_bits):
            pieces = [
                (segment, int(starts[chunk]), int(starts[chunk + 1]))
                for segment, starts in zip(segments, starts_per_segment, strict=True)
                if starts[chunk + 1] > starts[chunk]
            ]
            if not pieces:
                continue
            run_bounds = np.zeros(len(pieces) + 1, dtype=np.int64)
            run_bounds[1:] = np.cumsum([b - a for _, a, b in pieces])
            n_in = int(run_bounds[-1])
            hashes = np.empty(n_in, dtype=np.uint32)
            values = np.empty(n_in, dtype=np.uint32)
            for i, (segment, a, b) in enumerate(pieces):
                lo, hi = int(run_bounds[i]), int(run_bounds[i + 1])
                decode_hashes(
                    segment.directory, segment.low_words, segment.layout.low_bits, a, b, hashes[lo:hi]
                )
                values[lo:hi] = segment.values(a, b)
            out_hashes = np.empty(n_in, dtype=np.uint32)
            out_values = np.empty(n_in, dtype=np.uint32)
            n = merge_runs(hashes, values, run_bounds, dead_starts, dead_ends, out_hashes, out_values)
            if n < 0:
                raise StoreError(
                    "segments to merge are not sorted or share a row: "
                    + ", ".join(s.source for s, _, _ in pieces)
                    + " look damaged; restore them from a backup"
                )
            out.append(out_hashes[:n], out_values[:n])
            written += n
        if written != n_out:
            raise StoreError(f"merge wrote {written} rows, expected {n_out}: inputs look damaged")
        out.finish()
        return out.layout


def merge_in_memory(
    segments: Sequence[Segment], *, fingerprint_version: int, dead_starts: np.ndarray, dead_ends: np.ndarray
) -> bytes:
    """Merge small in-memory segments (level 0) into one serialised segment with a dense directory
    (`dense_dir_bits`: it is searched by every lookup), dropping rows in dead intervals. The result may
    hold zero rows. Holds all rows in memory at once: meant for a few hundred thousand rows.
    """
    dead_starts = np.ascontiguousarray(dead_starts, dtype=np.uint32)
    dead_ends = np.ascontiguousarray(dead_ends, dtype=np.uint32)
    hashes = np.concatenate([s.hashes() for s in segments] + [np.empty(0, np.uint32)])
    values = np.concatenate([s.values() for s in segments] + [np.empty(0, np.uint32)])
    run_bounds = np.zeros(len(segments) + 1, dtype=np.int64)
    run_bounds[1:] = np.cumsum([s.n_rows for s in segments])
    out_hashes = np.empty_like(hashes)
    out_values = np.empty_like(values)
    n = merge_runs(hashes, values, run_bounds, dead_starts, dead_ends, out_hashes, out_values)
    if n < 0:
        sources = ", ".join(s.source for s in segments)
        raise StoreError(f"level-0 segments are not sorted or share a row: {sources} look damaged")
    hash_bits = max([s.layout.hash_bits for s in segments] + [1])
    return encode_segment(
        out_hashes[:n],
        out_values[:n],
        fingerprint_version=fingerprint_version,
        hash_bits=hash_bits,
        dir_bits=dense_dir_bits(n, hash_bits),
    )


# -- kernels and their NumPy references ----------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _field(words: np.ndarray, bits: int, row: np.int64) -> np.int64:
    # field `row` of a packed section: two aligned loads, a shift and a mask (bits <= 32, so the field
    # always lies inside the 64 bits loaded, whatever its position in the first word)
    pos = np.int64(row) * bits
    k = pos >> 5
    pair = np.uint64(words[k]) | (np.uint64(words[k + 1]) << np.uint64(32))
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    return np.int64((pair >> np.uint64(pos & 31)) & mask)


@njit(cache=True, nogil=True)
def pack_fields(fields: np.ndarray, minus: int, bits: int, bit0: int, words: np.ndarray) -> None:
    """OR `fields[i] - minus` into `words` at bit bit0 + i * bits (words zeroed past bit0 by the caller;
    each field below 2**bits, checked by the writer; `words` holds the bits plus one word)."""
    for i in range(fields.shape[0]):
        pos = bit0 + np.int64(i) * bits
        k = pos >> 5
        v = np.uint64(np.int64(fields[i]) - minus) << np.uint64(pos & 31)
        words[k] |= np.uint32(v & np.uint64(0xFFFFFFFF))
        words[k + 1] |= np.uint32(v >> np.uint64(32))


@njit(cache=True, nogil=True)
def unpack_fields(
    words: np.ndarray, bits: int, plus: int, row_start: int, row_end: int, out: np.ndarray
) -> None:
    """out[r - row_start] = plus + field r, for rows [row_start, row_end) of a packed section."""
    for r in range(row_start, row_end):
        out[r - row_start] = plus + _field(words, bits, r)


def pack_fields_reference(fields: np.ndarray, minus: int, bits: int) -> np.ndarray:
    """NumPy reference of `pack_fields` from bit 0: the section's words (with the spare words)."""
    n = fields.shape[0]
    words = np.zeros(packed_words(n, bits), np.uint64)
    if bits:
        v = fields.astype(np.uint64) - np.uint64(minus)
        pos = np.arange(n, dtype=np.uint64) * np.uint64(bits)
        shifted = v << (pos & np.uint64(31))
        k = (pos >> np.uint64(5)).astype(np.int64)
        np.bitwise_or.at(words, k, shifted & np.uint64(0xFFFFFFFF))
        np.bitwise_or.at(words, k + 1, shifted >> np.uint64(32))
    return words.astype(np.uint32)


def unpack_fields_reference(words: np.ndarray, bits: int, plus: int, n_rows: int) -> np.ndarray:
    """NumPy reference of `unpack_fields` over rows [0, n_rows): uint64 values."""
    w = np.asarray(words, dtype=np.uint64)
    pos = np.arange(n_rows, dtype=np.uint64) * np.uint64(bits)
    k = (pos >> np.uint64(5)).astype(np.int64)
    pair = w[k] | (w[k + 1] << np.uint64(32)) if n_rows else np.empty(0, np.uint64)
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    return np.uint64(plus) + ((pair >> (pos & np.uint64(31))) & mask)


# queries per block of the touch passes: the block's loads are issued together, and the block's lines are
# still in the CPU caches when it is searched
TOUCH_BLOCK = 256
# buckets of more rows than this are searched from an interpolated guess (see `find_ranges`)
INTERPOLATE_ROWS = 64


@njit(cache=True, nogil=True, inline="always")
def _search_bucket(
    low: np.ndarray, low_bits: int, lo: np.int64, hi: np.int64, target: np.int64
) -> tuple[np.int64, np.int64]:
    # lower bound in the "base + length" form, which the compiler turns into conditional moves (no
    # mispredicted branch per step), then a short scan for the end: a hash has few rows per segment
    base = lo
    n = hi - lo
    if n == 0:
        return lo, lo
    while n > 1:
        half = n >> 1
        base = base + half if _field(low, low_bits, base + half - 1) < target else base
        n -= half
    if _field(low, low_bits, base) < target:
        base += 1
    end = base
    while end < hi and _field(low, low_bits, end) == target:
        end += 1
    return base, end


@njit(cache=True, nogil=True, inline="always")
def _interpolate(low_bits: int, lo: np.int64, hi: np.int64, target: np.int64) -> np.int64:
    # where `target` would sit in [lo, hi) if the bucket's low bits were spread evenly: the row the
    # search starts from (t < 2**low_bits and n < 2**31, so the product fits)
    guess = lo + ((target * (hi - lo)) >> low_bits)
    return min(guess, hi - 1)


@njit(cache=True, nogil=True, inline="always")
def _search_from(
    low: np.ndarray, low_bits: int, lo: np.int64, hi: np.int64, target: np.int64, guess: np.int64
) -> tuple[np.int64, np.int64]:
    # `_search_bucket`'s answer for a non-empty bucket, found by galloping from `guess` (lo <= guess < hi)
    # to a span that holds the lower bound, then searching that span
    if _field(low, low_bits, guess) < target:  # the lower bound lies in (guess, hi]
        a = guess + 1
        step = np.int64(1)
        while a + step < hi and _field(low, low_bits, a + step - 1) < target:
            a += step
            step <<= 1
        b = min(hi, a + step)
    else:  # it lies in [lo, guess]
        b = guess
        step = np.int64(1)
        while b - step > lo and _field(low, low_bits, b - step) >= target:
            b -= step
            step <<= 1
        a = max(lo, b - step)
    # the span's search scanned the target's rows up to its end `b`; any further ones follow it
    start, end = _search_bucket(low, low_bits, a, b, target)
    while end < hi and _field(low, low_bits, end) == target:
        end += 1
    return start, end


@njit(cache=True, nogil=True)
def find_ranges(
    directory: np.ndarray,
    low: np.ndarray,
    low_bits: int,
    hash_bits: int,
    queries: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    touch: bool,
) -> int:
    """For each query hash, the row range [starts[i], ends[i]) holding it (empty range if absent).

    The directory narrows the search to one prefix bucket; a binary search over the low bits finds the
    start of the range inside it, a scan its end. Queries with bits above `hash_bits` match nothing (an
    empty range at n_rows, which is also their lower bound).

    `touch` (for segments larger than the CPU caches) works in blocks of `TOUCH_BLOCK` queries: first
    loads every bucket's bounds, then the first low-bits row of every bucket, then searches: those loads
    are independent, so the CPU overlaps their cache misses, where the one-pass loop waits for each in turn
    (measured 1.3-2x faster on 7M-30M-row segments, and slower on cache-resident ones). Blocks keep the
    touched lines in the caches until their search: 161 -> 144 ns per hash on a 774M-row segment, where
    one pass over all of a query's 170k hashes let them be evicted first. Query hashes fall in the crowded
    buckets (music's hashes are far from uniform: at 10,000 tracks a query's bucket holds 470 rows on
    average, 47 over all buckets), where a binary search waits for a cache miss at nearly every step: in a
    bucket of more than `INTERPOLATE_ROWS` rows the touch pass loads the row the target's low bits point to
    (its place were the bucket's low bits spread evenly; the answer lay a median 12 rows away), and the
    search gallops from there (151-164 -> 127-137 ns per hash on the 787M-row segment, 300 clips in each
    of four balanced runs). Returns a value folded from the touch pass, only so the compiler keeps those
    loads; callers ignore it.
    """
    n_rows = np.int64(directory[directory.shape[0] - 1])
    mask = (np.int64(1) << low_bits) - 1
    if not touch:
        for i in range(queries.shape[0]):
            q = np.int64(queries[i])
            if (q >> hash_bits) != 0:  # above every stored hash: empty range at the end
                starts[i] = n_rows
                ends[i] = n_rows
                continue
            p = q >> low_bits
            lo = np.int64(directory[p])
            hi = np.int64(directory[p + 1])
            if low_bits == 0:
                starts[i] = lo
                ends[i] = hi
            else:
                starts[i], ends[i] = _search_bucket(low, low_bits, lo, hi, q & mask)
        return 0
    n = queries.shape[0]
    touched = np.int64(0)
    for b0 in range(0, n, TOUCH_BLOCK):
        b1 = min(n, b0 + TOUCH_BLOCK)
        for i in range(b0, b1):
            q = np.int64(queries[i])
            if (q >> hash_bits) != 0:
                starts[i] = n_rows
                ends[i] = n_rows
                continue
            p = q >> low_bits
            starts[i] = directory[p]
            ends[i] = directory[p + 1]
        if low_bits == 0:
            continue
        for i in range(b0, b1):
            lo = starts[i]
            hi = ends[i]
            row = np.int64(0)
            if hi - lo > INTERPOLATE_ROWS:
                row = _interpolate(low_bits, lo, hi, np.int64(queries[i]) & mask)
            elif lo < hi:
                row = lo
            touched ^= _field(low, low_bits, row)
        for i in range(b0, b1):
            lo = starts[i]
            hi = ends[i]
            target = np.int64(queries[i]) & mask
            if hi - lo > INTERPOLATE_ROWS:
                guess = _interpolate(low_bits, lo, hi, target)
                starts[i], ends[i] = _search_from(low, low_bits, lo, hi, target, guess)
            else:
                starts[i], ends[i] = _search_bucket(low, low_bits, lo, hi, target)
    return touched


def find_ranges_reference(
    directory: np.ndarray, low: np.ndarray, low_bits: int, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of `find_ranges`: rebuild every hash, then `np.searchsorted` left and right."""
    full = decode_hashes_reference(directory, low, low_bits)
    starts = np.searchsorted(full, queries, side="left").astype(np.int64)
    ends = np.searchsorted(full, queries, side="right").astype(np.int64)
    return starts, ends


@njit(cache=True, nogil=True)
def gather_values(
    values: np.ndarray,
    value_bits: int,
    value_min: int,
    starts: np.ndarray,
    ends: np.ndarray,
    keep: np.ndarray,
    write_pos: np.ndarray,
    out: np.ndarray,
    touch: bool,
) -> int:
    """Unpack the values of rows [starts[i], ends[i]) (packed `value_bits` wide, plus `value_min`) to
    out[write_pos[i]:] for each kept query i; advance write_pos[i].

    Called once per segment with the same `write_pos`, it lays each query's postings out contiguously.
    Raises IndexError instead of writing outside `out` (kernels run without bounds checks). `touch`: see
    `find_ranges` (measured ~1.3x faster on a 30M-row segment). Returns a value folded from the touch
    pass, only so the compiler keeps those loads; callers ignore it.
    """
    n = starts.shape[0]
    touched = np.int64(0)
    if touch:
        for i in range(n):
            touched ^= _field(values, value_bits, starts[i] if starts[i] < ends[i] else 0)
    for i in range(n):
        if not keep[i] or ends[i] <= starts[i]:
            continue
        p = write_pos[i]
        last_word = (((ends[i] - 1) * value_bits) >> 5) + 1
        if starts[i] < 0 or last_word >= values.shape[0] or p + (ends[i] - starts[i]) > out.shape[0]:
            raise IndexError("gather_values: a range lies outside values or out")
        for r in range(starts[i], ends[i]):
            out[p] = value_min + _field(values, value_bits, r)
            p += 1
        write_pos[i] = p
    return touched


def gather_values_reference(
    values: np.ndarray,
    value_bits: int,
    value_min: int,
    starts: np.ndarray,
    ends: np.ndarray,
    keep: np.ndarray,
) -> list[np.ndarray]:
    """NumPy reference of `gather_values`: the slice of values of each query (empty if not kept)."""
    n_rows = int(max(ends.max(initial=0), 0))
    unpacked = unpack_fields_reference(values, value_bits, value_min, n_rows).astype(np.uint32)
    return [
        unpacked[a:b] if k else np.empty(0, np.uint32) for a, b, k in zip(starts, ends, keep, strict=True)
    ]


@njit(cache=True, nogil=True)
def locate_tracks(
    values: np.ndarray,
    bases: np.ndarray,
    block_first: np.ndarray,
    block_bits: int,
    out_index: np.ndarray,
    out_offset: np.ndarray,
) -> None:
    """Map frame addresses to (track index, offset): the track is the last one with bases[t] <= value.

    `block_first[b]` is that track for frame b << block_bits, so a value costs one table load plus a step
    for each track that starts inside its block before it (about 20x cheaper than a binary search over
    thousands of bases). Invariants: bases ascending, bases[0] <= every value, table covers every value.
    """
    n_tracks = bases.shape[0]
    for i in range(values.shape[0]):
        v = values[i]
        t = np.int64(block_first[np.int64(v) >> block_bits])
        while t + 1 < n_tracks and bases[t + 1] <= v:
            t += 1
        out_index[i] = t
        out_offset[i] = np.int64(v) - np.int64(bases[t])


def locate_tracks_reference(values: np.ndarray, bases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of `locate_tracks`: a binary search over the bases."""
    index = np.searchsorted(bases, values, side="right") - 1
    return index, values.astype(np.int64) - bases[index].astype(np.int64)


@njit(cache=True, nogil=True, inline="always")
def _track_index(value: np.uint32, bases: np.ndarray) -> np.int64:
    # index of the last base <= value (bases sorted ascending, bases[0] <= every value)
    a = 0
    b = bases.shape[0]
    while a < b:
        m = (a + b) >> 1
        if bases[m] <= value:
            a = m + 1
        else:
            b = m
    return a - 1


@njit(cache=True, nogil=True)
def count_live_postings(
    values: np.ndarray,
    value_bits: int,
    value_min: int,
    starts: np.ndarray,
    ends: np.ndarray,
    query_rows: np.ndarray,
    bases: np.ndarray,
    live: np.ndarray,
    limit: int,
    counts: np.ndarray,
) -> None:
    """Add to counts[j] the postings of query query_rows[j] whose track is live, stopping past `limit`.

    Used only for hashes over the cap while deleted tracks' postings remain: the early stop bounds the work
    for very common hashes.
    """
    for j in range(query_rows.shape[0]):
        i = query_rows[j]
        c = counts[j]
        r = starts[i]
        while r < ends[i] and c <= limit:
            if live[_track_index(np.uint32(value_min + _field(values, value_bits, r)), bases)]:
                c += 1
            r += 1
        counts[j] = c


def count_live_postings_reference(
    values: np.ndarray,
    value_bits: int,
    value_min: int,
    starts: np.ndarray,
    ends: np.ndarray,
    query_rows: np.ndarray,
    bases: np.ndarray,
    live: np.ndarray,
) -> np.ndarray:
    """NumPy reference of `count_live_postings` without the early stop: exact live counts."""
    out = np.zeros(query_rows.shape[0], dtype=np.int64)
    unpacked = unpack_fields_reference(values, value_bits, value_min, int(ends.max(initial=0)))
    for j, i in enumerate(query_rows):
        v = unpacked[starts[i] : ends[i]]
        out[j] = int(np.count_nonzero(live[np.searchsorted(bases, v, side="right") - 1]))
    return out


@njit(cache=True, nogil=True)
def decode_hashes(
    directory: np.ndarray, low: np.ndarray, low_bits: int, row_start: int, row_end: int, out: np.ndarray
) -> None:
    """Write the full hashes of rows [row_start, row_end) to out: (bucket prefix << low_bits) | low bits."""
    if row_end <= row_start:
        return
    p = np.searchsorted(directory, row_start, side="right") - 1
    for r in range(row_start, row_end):
        while np.int64(directory[p + 1]) <= r:
            p += 1
        h = np.int64(p) << low_bits
        if low_bits > 0:
            h |= _field(low, low_bits, r)
        out[r - row_start] = h


def decode_hashes_reference(directory: np.ndarray, low: np.ndarray, low_bits: int) -> np.ndarray:
    """NumPy reference of `decode_hashes` over all rows: repeat each prefix by its bucket size."""
    counts = np.diff(np.asarray(directory, dtype=np.int64))
    prefixes = np.repeat(np.arange(counts.shape[0], dtype=np.uint64), counts) << np.uint64(low_bits)
    if low_bits > 0:
        prefixes |= unpack_fields_reference(low, low_bits, 0, prefixes.shape[0])
    return prefixes.astype(np.uint32)


@njit(cache=True, nogil=True, inline="always")
def _in_intervals(value: np.uint32, starts: np.ndarray, ends: np.ndarray) -> bool:
    k = _track_index(value, starts)
    return k >= 0 and value < ends[k]


@njit(cache=True, nogil=True)
def count_in_intervals(
    values: np.ndarray, value_bits: int, value_min: int, n_rows: int, starts: np.ndarray, ends: np.ndarray
) -> int:
    """Number of the `n_rows` packed values inside any interval [starts[i], ends[i]) (intervals sorted
    and disjoint)."""
    n = 0
    for r in range(n_rows):
        if _in_intervals(np.uint32(value_min + _field(values, value_bits, r)), starts, ends):
            n += 1
    return n


def count_in_intervals_reference(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> int:
    """NumPy reference of `count_in_intervals`, over unpacked values."""
    return int(np.count_nonzero(_in_intervals_reference(np.asarray(values), starts, ends)))


def _in_intervals_reference(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    k = np.searchsorted(starts, values, side="right") - 1
    return (k >= 0) & (values < ends[np.maximum(k, 0)])


@njit(cache=True, nogil=True)
def _merge_two(src: np.ndarray, lo: int, mid: int, hi: int, dst: np.ndarray) -> None:
    # merge sorted src[lo:mid] and src[mid:hi] into dst[lo:hi]
    i, j, k = lo, mid, lo
    while i < mid and j < hi:
        if src[j] < src[i]:
            dst[k] = src[j]
            j += 1
        else:
            dst[k] = src[i]
            i += 1
        k += 1
    while i < mid:
        dst[k] = src[i]
        i += 1
        k += 1
    while j < hi:
        dst[k] = src[j]
        j += 1
        k += 1


@njit(cache=True, nogil=True)
def merge_runs(
    hashes: np.ndarray,
    values: np.ndarray,
    run_bounds: np.ndarray,
    dead_starts: np.ndarray,
    dead_ends: np.ndarray,
    out_hashes: np.ndarray,
    out_values: np.ndarray,
) -> int:
    """Merge the sorted runs rows[run_bounds[r]:run_bounds[r+1]] into out, dropping rows whose value lies
    in a dead interval. Returns the rows written, or -1 if the merged rows are not strictly increasing
    (an unsorted run, or a row present twice).

    Rows become uint64 keys (hash << 32 | value), runs are merged pairwise (ceil(log2 k) streaming passes,
    measured faster than a k-way heap and than np.sort / np.lexsort, see bench/store_lookup.py), then one
    pass checks the order, drops dead rows and splits the keys.
    """
    n = hashes.shape[0]
    keys = np.empty(n, np.uint64)
    for r in range(n):
        keys[r] = (np.uint64(hashes[r]) << np.uint64(32)) | np.uint64(values[r])
    k = run_bounds.shape[0] - 1
    if k > 1:
        spare = np.empty(n, np.uint64)
        bounds = run_bounds.copy()
        while k > 1:
            merged = np.empty((k + 1) // 2 + 1, np.int64)
            m = 0
            for r in range(0, k, 2):
                lo = bounds[r]
                if r + 1 < k:
                    _merge_two(keys, lo, bounds[r + 1], bounds[r + 2], spare)
                else:
                    spare[lo : bounds[r + 1]] = keys[lo : bounds[r + 1]]
                merged[m] = lo
                m += 1
            merged[m] = bounds[k]
            keys, spare = spare, keys
            bounds = merged[: m + 1]
            k = m
    check_dead = dead_starts.shape[0] > 0
    low_mask = np.uint64(0xFFFFFFFF)
    written = 0
    for r in range(n):
        key = keys[r]
        if r > 0 and key <= keys[r - 1]:
            return -1
        v = np.uint32(key & low_mask)
        if check_dead and _in_intervals(v, dead_starts, dead_ends):
            continue
        out_hashes[written] = np.uint32(key >> np.uint64(32))
        out_values[written] = v
        written += 1
    return written


def merge_runs_reference(
    hashes: np.ndarray, values: np.ndarray, dead_starts: np.ndarray, dead_ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """NumPy reference of `merge_runs`: lexsort everything, drop dead rows; None if a row repeats."""
    order = np.lexsort((values, hashes))
    h, v = hashes[order], values[order]
    if h.shape[0] > 1 and not _strictly_increasing(h, v):
        return None
    if dead_starts.shape[0]:
        alive = ~_in_intervals_reference(v, dead_starts, dead_ends)
        h, v = h[alive], v[alive]
    return h, v


# -- upgrading version 1 -------------------------------------------------------------------------------
# Version 1 (until 2026-11) stored the low hash bits as whole uint8/uint16/uint32 and the values as plain
# uint32: header "<8sIIQBBBBIIII" (magic, version, fingerprint version, n_rows, hash_bits, dir_bits, low
# itemsize, dir itemsize, three section CRCs, header CRC), then directory, low bits, values, each 8-byte
# aligned. Shards written then are rewritten in the current format when opened (`embedded.py`).

_HEADER_V1 = struct.Struct("<8sIIQBBBBIIII")
UPGRADE_CHUNK_ROWS = 1 << 20


def format_version_of(data: bytes | np.ndarray) -> int | None:
    """The segment format version in a segment's first bytes, or None if they are not a segment's."""
    raw = bytes(data[: _FIXED.size])
    if len(raw) < _FIXED.size or raw[:8] != SEGMENT_MAGIC:
        return None
    return int(_FIXED.unpack_from(raw)[1])


@dataclass(frozen=True)
class _V1Segment:
    fingerprint_version: int
    hash_bits: int
    low_bits: int
    directory: np.ndarray
    low: np.ndarray
    values: np.ndarray

    @classmethod
    def parse(cls, buffer: np.ndarray, source: str) -> _V1Segment:
        raw = bytes(buffer[:HEADER_NBYTES])
        if len(raw) < HEADER_NBYTES:
            raise StoreError(f"{source} is truncated: {len(raw)} bytes, shorter than its header")
        fields = _HEADER_V1.unpack_from(raw)
        _, version, fingerprint_version, n_rows, hash_bits, dir_bits, low_itemsize, dir_itemsize = fields[:8]
        if version != 1 or zlib.crc32(raw[: _HEADER_V1.size - 4]) != fields[11]:
            raise StoreError(f"{source} is damaged: version-1 header checksum mismatch")
        low_bits = hash_bits - dir_bits
        if low_itemsize not in (0, 1, 2, 4) or dir_itemsize not in (4, 8) or not 0 <= low_bits <= 32:
            raise StoreFormatError(f"{source} has an unsupported version-1 layout")
        dir_nbytes = ((1 << dir_bits) + 1) * dir_itemsize
        low_offset = _align(HEADER_NBYTES + dir_nbytes)
        values_offset = _align(low_offset + n_rows * low_itemsize)
        if buffer.shape[0] != values_offset + 4 * n_rows:
            raise StoreError(f"{source} is damaged: its size does not match its version-1 header")
        directory = buffer[HEADER_NBYTES : HEADER_NBYTES + dir_nbytes].view(f"<u{dir_itemsize}")
        low = buffer[low_offset : low_offset + n_rows * low_itemsize].view(f"<u{max(low_itemsize, 1)}")
        values = buffer[values_offset : values_offset + 4 * n_rows].view("<u4")
        for section, crc in zip((directory, low, values), fields[8:11], strict=True):
            if zlib.crc32(memoryview(np.ascontiguousarray(section)).cast("B")) != crc:
                raise StoreError(f"{source} is damaged: section checksum mismatch; restore it from a backup")
        return cls(fingerprint_version, hash_bits, low_bits, directory, low, values)

    def rows(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        prefixes = np.searchsorted(self.directory, np.arange(a, b, dtype=np.int64), side="right") - 1
        hashes = prefixes.astype(np.uint64) << np.uint64(self.low_bits)
        if self.low.shape[0]:
            hashes |= self.low[a:b].astype(np.uint64)
        return hashes.astype(np.uint32), np.ascontiguousarray(self.values[a:b])


def upgrade_v1_file(path: Path) -> SegmentLayout:
    """Rewrite the version-1 segment file at `path` in the current format, in place: the new file is
    written beside it, fsynced and renamed over it, so a crash leaves one of the two whole."""
    buffer = np.memmap(path, dtype=np.uint8, mode="r")
    old = _V1Segment.parse(buffer, str(path))
    n_rows = old.values.shape[0]
    value_range = (int(old.values.min()), int(old.values.max())) if n_rows else (0, 0)
    tmp = path.with_name(path.name + ".upgrade.tmp")
    with SegmentFile(tmp, n_rows, old.hash_bits, old.fingerprint_version, None, value_range) as out:
        for a in range(0, n_rows, UPGRADE_CHUNK_ROWS):
            out.append(*old.rows(a, min(n_rows, a + UPGRADE_CHUNK_ROWS)))
        out.finish()
        layout = out.layout
    del buffer, old
    os.replace(tmp, path)
    fsync_directory(path.parent)
    return layout


def upgrade_v1_bytes(data: bytes, *, source: str) -> bytes:
    """A version-1 segment held in memory (a level-0 BLOB), re-encoded in the current format."""
    old = _V1Segment.parse(np.frombuffer(data, dtype=np.uint8).copy(), source)
    hashes, values = old.rows(0, old.values.shape[0])
    return encode_segment(
        hashes, values, fingerprint_version=old.fingerprint_version, hash_bits=old.hash_bits
    )
