"""The on-disk sorted-postings segment format, and the numba kernels that search and merge segments.

A segment is an immutable, sorted run of postings (hash, value), where `hash` is a fingerprint hash
(uint32) and `value` is a frame address (uint32, see `embedded.py`). Rows are sorted by (hash, value) and
unique. The byte layout (little-endian, every section starts on an 8-byte boundary):

    header      64 bytes      `_HEADER` below: magic, versions, n_rows, bit widths, CRC32 of each section
    directory   dir dtype[2**dir_bits + 1]
                              directory[p] = first row whose hash prefix is >= p, directory[-1] = n_rows;
                              the prefix is the top `dir_bits` of the `hash_bits` significant hash bits
    low bits    low dtype[n_rows]
                              the remaining `hash_bits - dir_bits` low bits of each hash, in the smallest
                              unsigned dtype that holds them (none at all when the directory covers every bit)
    values      uint32[n_rows]

`hash_bits` is the bit length of the largest hash in the segment (at most 32): the engine's hashes use
22 bits, and indexing bits that are always zero would waste the directory. `dir_bits` is chosen from the
row count so that the file is smallest (see `choose_dir_bits`): about 4-6 bytes per posting.

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
SEGMENT_FORMAT_VERSION = 1  # bump on any change of the byte layout; readers refuse versions they do not know
MAX_HASH_BITS = 32  # hashes are uint32
MAX_DIR_BITS = 24  # a directory of 2**24 + 1 entries (64 MiB) is the largest worth its bytes
DIR_GROWTH_SHARE = 16  # extra directory bits may cost up to 1/16 of the row data (shorter searches)
TOUCH_MIN_NBYTES = 8 << 20  # bytes: segments above this miss the caches; kernels then batch their loads
ALIGN = 8  # bytes; every section starts aligned so the mapped arrays are aligned for the kernels

# magic, format version, fingerprint version, n_rows, hash_bits, dir_bits, low itemsize, dir itemsize,
# CRC32 of directory, low bits and values, then CRC32 of the preceding header bytes
_HEADER = struct.Struct("<8sIIQBBBBIIII")
HEADER_NBYTES = 64
_HEADER_PAD = b"\x00" * (HEADER_NBYTES - _HEADER.size)
_FIXED = struct.Struct("<8sI")  # the part of the header every future version must keep: magic, version

_LOW_DTYPES = {0: np.dtype(np.uint8), 1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32)}


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def low_itemsize_for(low_bits: int) -> int:
    """Bytes per row that hold `low_bits` bits: 0 (no low array), 1, 2 or 4."""
    if low_bits == 0:
        return 0
    if low_bits <= 8:
        return 1
    if low_bits <= 16:
        return 2
    return 4


@dataclass(frozen=True)
class SegmentLayout:
    """Byte offsets and dtypes of every section of a segment with `n_rows` rows.

    Invariants: 0 <= dir_bits <= hash_bits <= 32; sections are 8-byte aligned; `total_nbytes` is the exact
    file size.
    """

    n_rows: int
    hash_bits: int
    dir_bits: int

    @classmethod
    def for_rows(cls, n_rows: int, hash_bits: int) -> SegmentLayout:
        return cls(n_rows, hash_bits, choose_dir_bits(n_rows, hash_bits))

    @property
    def low_bits(self) -> int:
        return self.hash_bits - self.dir_bits

    @property
    def low_itemsize(self) -> int:
        return low_itemsize_for(self.low_bits)

    @property
    def low_dtype(self) -> np.dtype:
        return _LOW_DTYPES[self.low_itemsize]

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
        return self.n_rows * self.low_itemsize

    @property
    def values_offset(self) -> int:
        return _align(self.low_offset + self.low_nbytes)

    @property
    def values_nbytes(self) -> int:
        return self.n_rows * 4

    @property
    def total_nbytes(self) -> int:
        return self.values_offset + self.values_nbytes


def choose_dir_bits(n_rows: int, hash_bits: int) -> int:
    """Directory bits for a segment of `n_rows` rows whose hashes have `hash_bits` significant bits.

    Rule: take the layout with the fewest bytes; then, keeping the same low-bits dtype, add directory bits
    while the directory stays within 1/16 of the row data (each bit halves the binary search for free).
    Examples with 32-bit hashes: 1k rows -> 8 B/row, 4M rows -> 6.25 B/row, 100M rows -> 5.7 B/row; with
    the engine's 22-bit hashes: 1M rows -> 5.3 B/row, 100M rows -> 4.2 B/row (no low bits at all).
    """
    if not 0 <= hash_bits <= MAX_HASH_BITS:
        raise ValueError(f"hash_bits must be in 0..{MAX_HASH_BITS}, got {hash_bits}")
    top = min(hash_bits, MAX_DIR_BITS)
    candidates = [SegmentLayout(n_rows, hash_bits, d) for d in range(top + 1)]
    best = min(candidates, key=lambda layout: (layout.total_nbytes, -layout.dir_bits))
    dir_bits = best.dir_bits
    while dir_bits < top:
        grown = SegmentLayout(n_rows, hash_bits, dir_bits + 1)
        row_nbytes = n_rows * (grown.low_itemsize + 4)
        if grown.low_itemsize != best.low_itemsize or grown.dir_nbytes * DIR_GROWTH_SHARE > row_nbytes:
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


class SegmentWriter:
    """Writes one segment from sorted chunks of rows, in order, holding only one chunk in memory.

    The row count must be known up front (it fixes the layout); `finish` checks that exactly that many
    rows arrived. Every chunk is checked: rows strictly increasing by (hash, value), continuing after the
    previous chunk, hashes below 2**hash_bits. `dir_bits` overrides `choose_dir_bits` (tests use it to
    reach every layout without huge segments).
    """

    def __init__(
        self, sink: _Sink, n_rows: int, hash_bits: int, fingerprint_version: int, dir_bits: int | None = None
    ) -> None:
        if dir_bits is not None and not 0 <= dir_bits <= min(hash_bits, MAX_DIR_BITS):
            raise ValueError(f"dir_bits must be in 0..min(hash_bits, {MAX_DIR_BITS}), got {dir_bits}")
        self._sink = sink
        if dir_bits is None:
            self.layout = SegmentLayout.for_rows(n_rows, hash_bits)
        else:
            self.layout = SegmentLayout(n_rows, hash_bits, dir_bits)
        self._fingerprint_version = fingerprint_version
        self._rows_written = 0
        self._next_prefix = 0  # first directory entry not yet written
        self._last_row: tuple[int, int] | None = None
        self._crc_dir = 0
        self._crc_low = 0
        self._crc_values = 0

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
        first = (int(hashes[0]), int(values[0]))
        if self._last_row is not None and first <= self._last_row:
            raise ValueError("rows must continue after the previous chunk")
        self._last_row = (int(hashes[-1]), int(values[-1]))

        prefixes = hashes.astype(np.int64) >> layout.low_bits  # int64: a shift by 32 is defined
        last_prefix = int(prefixes[-1])
        # directory[p] = rows before the first row with prefix >= p; known for every p <= last_prefix now
        self._write_directory(self._next_prefix, last_prefix + 1, prefixes)
        self._next_prefix = last_prefix + 1

        if layout.low_itemsize:
            low = (hashes & np.uint32((1 << layout.low_bits) - 1)).astype(layout.low_dtype)
            low_bytes = memoryview(low).cast("B")
            self._sink.write_at(layout.low_offset + self._rows_written * layout.low_itemsize, low_bytes)
            self._crc_low = zlib.crc32(low_bytes, self._crc_low)
        value_bytes = memoryview(np.ascontiguousarray(values)).cast("B")
        self._sink.write_at(layout.values_offset + self._rows_written * 4, value_bytes)
        self._crc_values = zlib.crc32(value_bytes, self._crc_values)
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
        """Write the rest of the directory and the header; raises if fewer rows arrived than announced."""
        layout = self.layout
        if self._rows_written != layout.n_rows:
            raise ValueError(f"{self._rows_written} rows written, {layout.n_rows} announced")
        self._write_directory(self._next_prefix, layout.dir_entries, None)
        self._next_prefix = layout.dir_entries
        self._sink.write_at(0, _pack_header(layout, self._fingerprint_version, self._crcs()))

    def _crcs(self) -> tuple[int, int, int]:
        return self._crc_dir, self._crc_low, self._crc_values


def _pack_header(layout: SegmentLayout, fingerprint_version: int, crcs: tuple[int, int, int]) -> bytes:
    fields = (
        SEGMENT_MAGIC,
        SEGMENT_FORMAT_VERSION,
        fingerprint_version,
        layout.n_rows,
        layout.hash_bits,
        layout.dir_bits,
        layout.low_itemsize,
        layout.dir_dtype.itemsize,
        *crcs,
    )
    body = _HEADER.pack(*fields, 0)[:-4]
    return body + struct.pack("<I", zlib.crc32(body)) + _HEADER_PAD


def _strictly_increasing(hashes: np.ndarray, values: np.ndarray) -> bool:
    if hashes.shape[0] < 2:
        return True
    h0, h1 = hashes[:-1], hashes[1:]
    return bool(np.all((h1 > h0) | ((h1 == h0) & (values[1:] > values[:-1]))))


def encode_segment(
    hashes: np.ndarray,
    values: np.ndarray,
    *,
    fingerprint_version: int,
    hash_bits: int | None = None,
    dir_bits: int | None = None,
) -> bytes:
    """Serialise sorted unique rows (uint32 hashes, uint32 values) as one segment, in memory.

    `hash_bits` defaults to the bit length of the largest hash. Same bytes as `write_segment_file`.
    """
    if hash_bits is None:
        hash_bits = hash_bits_of(int(hashes[-1])) if hashes.shape[0] else 1
    n_rows = int(hashes.shape[0])
    if dir_bits is None:
        layout = SegmentLayout.for_rows(n_rows, hash_bits)
    else:
        layout = SegmentLayout(n_rows, hash_bits, dir_bits)
    sink = _MemorySink(layout.total_nbytes)
    writer = SegmentWriter(sink, n_rows, hash_bits, fingerprint_version, dir_bits)
    writer.append(hashes, values)
    writer.finish()
    return bytes(sink.buffer)


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
        self, path: Path, n_rows: int, hash_bits: int, fingerprint_version: int, dir_bits: int | None = None
    ) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._writer = SegmentWriter(
                _FileSink(self._fd), n_rows, hash_bits, fingerprint_version, dir_bits
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
    with SegmentFile(path, int(hashes.shape[0]), hash_bits, fingerprint_version, dir_bits) as out:
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
    """A readable segment: the directory, low-bit and value arrays as read-only views of its bytes.

    Invariant: the arrays describe rows strictly sorted by (hash, value) (checked when written; the CRCs
    detect later damage, see `verify`).
    """

    source: str  # file path or a description, for messages
    layout: SegmentLayout
    fingerprint_version: int
    directory: np.ndarray
    low: np.ndarray  # empty when the directory covers every hash bit
    values: np.ndarray
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
        (_, _, fingerprint_version, n_rows, hash_bits, dir_bits, low_itemsize, dir_itemsize) = fields[:8]
        crcs = (fields[8], fields[9], fields[10])
        if zlib.crc32(raw[: _HEADER.size - 4]) != fields[11]:
            raise StoreError(f"{source} is damaged: header checksum mismatch")
        if expected_fingerprint_version is not None and fingerprint_version != expected_fingerprint_version:
            raise StoreFormatError(
                f"{source} holds fingerprints of version {fingerprint_version}; this store expects version "
                f"{expected_fingerprint_version}. Re-ingest the tracks with the current tunescout."
            )
        if not (0 <= dir_bits <= hash_bits <= MAX_HASH_BITS and dir_bits <= MAX_DIR_BITS):
            raise StoreFormatError(
                f"{source} has an unsupported layout: hash_bits={hash_bits}, dir_bits={dir_bits}"
            )
        layout = SegmentLayout(n_rows, hash_bits, dir_bits)
        if low_itemsize != layout.low_itemsize or dir_itemsize != layout.dir_dtype.itemsize:
            raise StoreFormatError(
                f"{source} has an unsupported layout: low itemsize {low_itemsize}, "
                f"dir itemsize {dir_itemsize}"
            )
        if buffer.shape[0] != layout.total_nbytes:
            raise StoreError(
                f"{source} is damaged: {buffer.shape[0]} bytes, its header announces {layout.total_nbytes}"
            )
        directory = buffer[layout.dir_offset : layout.dir_offset + layout.dir_nbytes].view(layout.dir_dtype)
        low = buffer[layout.low_offset : layout.low_offset + layout.low_nbytes].view(layout.low_dtype)
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
            for a in (self.directory, self.low, self.values)
        )
        if found != self.crcs:
            raise StoreError(f"{self.source} is damaged: section checksum mismatch; restore it from a backup")

    def find_ranges(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row range [starts[i], ends[i]) of each query hash (uint32) in this segment (int64 arrays)."""
        starts = np.empty(queries.shape[0], dtype=np.int64)
        ends = np.empty(queries.shape[0], dtype=np.int64)
        find_ranges(
            self.directory,
            self.low,
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
        out = np.empty(max(0, row_end - row_start), dtype=np.uint32)
        decode_hashes(self.directory, self.low, self.layout.low_bits, row_start, row_end, out)
        return out


# -- merging -------------------------------------------------------------------------------------------


def count_surviving_rows(segments: Sequence[Segment], dead_starts: np.ndarray, dead_ends: np.ndarray) -> int:
    """Rows of `segments` whose value is outside every dead interval [dead_starts[i], dead_ends[i])."""
    total = sum(s.n_rows for s in segments)
    if dead_starts.shape[0] == 0:
        return total
    return total - sum(int(count_in_intervals(s.values, dead_starts, dead_ends)) for s in segments)


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
    with SegmentFile(path, n_out, hash_bits, fingerprint_version) as out:
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
                decode_hashes(segment.directory, segment.low, segment.layout.low_bits, a, b, hashes[lo:hi])
                values[lo:hi] = segment.values[a:b]
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
    values = np.concatenate([np.asarray(s.values) for s in segments] + [np.empty(0, np.uint32)])
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
def _search_bucket(
    low: np.ndarray, lo: np.int64, hi: np.int64, target: np.int64
) -> tuple[np.int64, np.int64]:
    # lower bound in the "base + length" form, which the compiler turns into conditional moves (no
    # mispredicted branch per step), then a short scan for the end: a hash has few rows per segment
    base = lo
    n = hi - lo
    if n == 0:
        return lo, lo
    while n > 1:
        half = n >> 1
        base = base + half if np.int64(low[base + half - 1]) < target else base
        n -= half
    if np.int64(low[base]) < target:
        base += 1
    end = base
    while end < hi and np.int64(low[end]) == target:
        end += 1
    return base, end


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

    `touch` (for segments larger than the CPU caches) first loads every bucket's bounds, then the first
    low-bits row of every bucket, then searches: those loads are independent, so the CPU overlaps their
    cache misses, where the one-pass loop waits for each in turn (measured 1.3-2x faster on 7M-30M-row
    segments, and slower on cache-resident ones). Returns a value folded from the touch pass, only so the
    compiler keeps those loads; callers ignore it.
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
                starts[i], ends[i] = _search_bucket(low, lo, hi, q & mask)
        return 0
    for i in range(queries.shape[0]):
        q = np.int64(queries[i])
        if (q >> hash_bits) != 0:
            starts[i] = n_rows
            ends[i] = n_rows
            continue
        p = q >> low_bits
        starts[i] = directory[p]
        ends[i] = directory[p + 1]
    if low_bits == 0 or low.shape[0] == 0:
        return 0
    touched = 0
    for i in range(queries.shape[0]):
        row = starts[i] if starts[i] < ends[i] else 0
        touched ^= np.int64(low[row])
    for i in range(queries.shape[0]):
        starts[i], ends[i] = _search_bucket(low, starts[i], ends[i], np.int64(queries[i]) & mask)
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
    starts: np.ndarray,
    ends: np.ndarray,
    keep: np.ndarray,
    write_pos: np.ndarray,
    out: np.ndarray,
    touch: bool,
) -> int:
    """Copy values[starts[i]:ends[i]] to out[write_pos[i]:] for each kept query i; advance write_pos[i].

    Called once per segment with the same `write_pos`, it lays each query's postings out contiguously.
    Raises IndexError instead of writing outside `out` (kernels run without bounds checks). `touch`: see
    `find_ranges` (measured ~1.3x faster on a 30M-row segment). Returns a value folded from the touch
    pass, only so the compiler keeps those loads; callers ignore it.
    """
    n = starts.shape[0]
    touched = np.uint32(0)
    if touch and values.shape[0] > 0:
        for i in range(n):
            touched ^= values[starts[i] if starts[i] < ends[i] else 0]
    for i in range(n):
        if not keep[i]:
            continue
        p = write_pos[i]
        if ends[i] > values.shape[0] or p + (ends[i] - starts[i]) > out.shape[0]:
            raise IndexError("gather_values: a range lies outside values or out")
        for r in range(starts[i], ends[i]):
            out[p] = values[r]
            p += 1
        write_pos[i] = p
    return touched


def gather_values_reference(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, keep: np.ndarray
) -> list[np.ndarray]:
    """NumPy reference of `gather_values`: the slice of values of each query (empty if not kept)."""
    return [
        np.asarray(values[a:b]) if k else np.empty(0, np.uint32)
        for a, b, k in zip(starts, ends, keep, strict=True)
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
            if live[_track_index(values[r], bases)]:
                c += 1
            r += 1
        counts[j] = c


def count_live_postings_reference(
    values: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    query_rows: np.ndarray,
    bases: np.ndarray,
    live: np.ndarray,
) -> np.ndarray:
    """NumPy reference of `count_live_postings` without the early stop: exact live counts."""
    out = np.zeros(query_rows.shape[0], dtype=np.int64)
    for j, i in enumerate(query_rows):
        v = np.asarray(values[starts[i] : ends[i]])
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
            h |= np.int64(low[r])
        out[r - row_start] = h


def decode_hashes_reference(directory: np.ndarray, low: np.ndarray, low_bits: int) -> np.ndarray:
    """NumPy reference of `decode_hashes` over all rows: repeat each prefix by its bucket size."""
    counts = np.diff(np.asarray(directory, dtype=np.int64))
    prefixes = np.repeat(np.arange(counts.shape[0], dtype=np.uint64), counts) << np.uint64(low_bits)
    if low_bits > 0:
        prefixes |= np.asarray(low, dtype=np.uint64)
    return prefixes.astype(np.uint32)


@njit(cache=True, nogil=True, inline="always")
def _in_intervals(value: np.uint32, starts: np.ndarray, ends: np.ndarray) -> bool:
    k = _track_index(value, starts)
    return k >= 0 and value < ends[k]


@njit(cache=True, nogil=True)
def count_in_intervals(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> int:
    """Number of values inside any interval [starts[i], ends[i]) (intervals sorted and disjoint)."""
    n = 0
    for r in range(values.shape[0]):
        if _in_intervals(values[r], starts, ends):
            n += 1
    return n


def count_in_intervals_reference(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> int:
    """NumPy reference of `count_in_intervals`."""
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
