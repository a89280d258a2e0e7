"""NumPy arrays <-> the little-endian byte fields of the protos (one copy, no per-element work)."""

from __future__ import annotations

import numpy as np

U32 = np.dtype("<u4")
I32 = np.dtype("<i4")
F64 = np.dtype("<f8")


def to_bytes(array: np.ndarray, dtype: np.dtype) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def from_bytes(data: bytes, dtype: np.dtype, what: str) -> np.ndarray:
    """The array in `data`; ValueError naming `what` if its length is not a whole number of items."""
    if len(data) % dtype.itemsize:
        raise ValueError(f"{what}: {len(data)} bytes is not a whole number of {dtype.itemsize}-byte items")
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)
