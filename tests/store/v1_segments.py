"""A writer of segment format version 1, kept only to test that shards written in it are upgraded."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from tunescout.store.segments import SEGMENT_MAGIC, choose_dir_bits


def _align(n: int) -> int:
    return (n + 7) // 8 * 8


def encode_v1(
    hashes: np.ndarray,
    values: np.ndarray,
    fingerprint_version: int,
    hash_bits: int,
    dir_bits: int | None = None,
) -> bytes:
    """Rows in the version-1 layout: byte-aligned low bits (0, 1, 2 or 4 bytes) and plain uint32 values."""
    n = hashes.shape[0]
    if dir_bits is None:
        dir_bits = min(choose_dir_bits(n, hash_bits, 32), hash_bits)
    low_bits = hash_bits - dir_bits
    low_itemsize = 0 if low_bits == 0 else 1 if low_bits <= 8 else 2 if low_bits <= 16 else 4
    prefixes = hashes.astype(np.int64) >> low_bits
    directory = np.searchsorted(prefixes, np.arange((1 << dir_bits) + 1), side="left").astype(np.uint32)
    low = (hashes.astype(np.uint64) & np.uint64((1 << low_bits) - 1)).astype(f"<u{max(low_itemsize, 1)}")
    low_bytes = low.tobytes() if low_itemsize else b""
    value_bytes = values.astype("<u4").tobytes()
    crcs = [zlib.crc32(directory.tobytes()), zlib.crc32(low_bytes), zlib.crc32(value_bytes)]
    header = struct.pack(
        "<8sIIQBBBBIII", SEGMENT_MAGIC, 1, fingerprint_version, n, hash_bits, dir_bits, low_itemsize, 4, *crcs
    )
    header += struct.pack("<I", zlib.crc32(header))
    out = bytearray(header.ljust(64, b"\0"))
    out += directory.tobytes()
    out += b"\0" * (_align(len(out)) - len(out))
    out += low_bytes
    out += b"\0" * (_align(len(out)) - len(out))
    out += value_bytes
    return bytes(out)
