"""Input checks every backend applies the same way: shards (tracks' metadata, fingerprints, query hashes)
and result stores (tokens, results as JSON text)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from tunescout.engine import arrays
from tunescout.engine.errors import StoreError
from tunescout.store.shard import Postings, TrackMeta

MAX_TRACK_FRAMES = 1 << 24  # frames (~74 h at 16 ms); a larger offset is a caller's bug, not a long track


def check_meta(meta: TrackMeta) -> None:
    if not isinstance(meta.file_sha1, str) or not meta.file_sha1:
        raise ValueError("TrackMeta.file_sha1 must be a non-empty string")
    if meta.year is not None and not isinstance(meta.year, int):
        raise ValueError(f"TrackMeta.year must be an int or None, got {meta.year!r}")
    if not math.isfinite(meta.duration_s) or meta.duration_s < 0:
        raise ValueError(
            f"TrackMeta.duration_s must be a finite number of seconds >= 0, got {meta.duration_s}"
        )


def as_uint32(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype == np.uint32:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 0xFFFFFFFF):
        raise ValueError(f"{what} must fit uint32")
    return array.astype(np.uint32)


def sorted_postings(hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows (hash, offset) as uint32 arrays sorted by (hash, offset), duplicates removed; and n_frames."""
    hashes = np.asarray(hashes)
    offsets = np.asarray(offsets)
    if hashes.ndim != 1 or offsets.shape != hashes.shape:
        raise ValueError(
            f"hashes and offsets must be 1-D and parallel, got {hashes.shape} and {offsets.shape}"
        )
    hashes = as_uint32(hashes, "hashes")
    if not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(f"offsets must be integer frames, got dtype {offsets.dtype}")
    if offsets.size == 0:
        return np.empty(0, np.uint32), np.empty(0, np.uint32), 0
    low, high = int(offsets.min()), int(offsets.max())
    if low < 0 or high >= MAX_TRACK_FRAMES:
        raise ValueError(f"offsets must lie in 0..{MAX_TRACK_FRAMES - 1} frames, got {low}..{high}")
    # in place where NumPy allows: a 3-hour track has 3.8 M rows, and each row-sized temporary of the
    # obvious expression is 31 MB more on the heap of the process that stores it
    keys = hashes.astype(np.uint64)
    keys <<= np.uint64(32)
    keys |= offsets.astype(np.uint32, copy=False)
    keys.sort()
    keys = keys[arrays.starts_of_runs(keys)]
    row_offsets = keys.astype(np.uint32)
    keys >>= np.uint64(32)
    return keys.astype(np.uint32), row_offsets, high + 1


def check_queries(hashes: np.ndarray) -> np.ndarray:
    queries = np.asarray(hashes)
    if queries.ndim != 1:
        raise ValueError(f"query hashes must be 1-D, got shape {queries.shape}")
    queries = np.ascontiguousarray(as_uint32(queries, "query hashes"))
    if queries.shape[0] > 1 and not bool(np.all(queries[1:] > queries[:-1])):
        raise ValueError("query hashes must be sorted ascending and unique (np.unique gives that)")
    return queries


def postings_from_rows(queries: np.ndarray, found: np.ndarray, cap: int) -> Postings:
    """Postings of a database's answer: `found` is (n, 3) int64 rows (hash, track id, frame) for the sorted
    unique `queries`; grouped by query hash, and without the hashes stored more than `cap` times (cap > 0)."""
    hash_index = np.searchsorted(queries, found[:, 0].astype(np.uint32)).astype(np.int32)
    order = np.argsort(hash_index, kind="stable")
    hash_index, found = hash_index[order], found[order]
    if cap > 0:
        counts = np.bincount(hash_index, minlength=queries.size)
        keep = counts[hash_index] <= cap
        hash_index, found = hash_index[keep], found[keep]
    return Postings(hash_index=hash_index, track_id=found[:, 1].copy(), offset=found[:, 2].astype(np.int32))


def check_token(token: str) -> None:
    if not isinstance(token, str) or not token:
        raise ValueError("a result token must be a non-empty string")


def encode_result(token: str, result: dict[str, Any]) -> str:
    """A recognition result as the JSON text a result store keeps (never pickle). ValueError for an empty
    token, a result that is not a dict, or one that is not plain JSON (NaN and infinities included)."""
    check_token(token)
    if not isinstance(result, dict):
        raise ValueError(f"a result must be a dict, got {type(result).__name__}")
    try:
        return json.dumps(result, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"result for token {token!r} is not plain JSON: {exc}") from exc


def decode_result(where: object, token: str, text: str) -> dict[str, Any]:
    """The result a store read back for `token`; StoreError if it is not a JSON object (damage)."""
    try:
        result = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"{where}: token {token!r} holds no valid JSON: damaged ({exc})") from exc
    if not isinstance(result, dict):
        raise StoreError(f"{where}: token {token!r} holds no JSON object: damaged")
    return result
