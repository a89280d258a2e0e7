"""Caches of per-shard lookups: in process memory, or in Redis (one database per shard).

A cached value is the Postings a shard returned for one exact set of query hashes, encoded as a versioned
byte string (never pickle). Keys carry the shard's generation, which every ingest or delete bumps, so an
answer is never stale: an old generation's keys are simply never read again and expire.

Redis faults never reach the caller: the cache is bypassed with a logged warning and tried again after a
pause. A generation bump that failed while Redis was away is done first when it comes back, before any read.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
from collections import OrderedDict
from typing import Protocol

import numpy as np
import redis

from tunescout.store.shard import Postings

logger = logging.getLogger(__name__)

_MAGIC = b"TSP1"  # format version 1 of an encoded Postings; bump on any change
_HEADER = struct.Struct("<4sI")
MAX_CACHED_POSTINGS = 1 << 18  # rows; larger answers are not worth the memory or the network


def encode_postings(postings: Postings) -> bytes:
    n = len(postings)
    return b"".join(
        (
            _HEADER.pack(_MAGIC, n),
            np.ascontiguousarray(postings.hash_index, "<i4").tobytes(),
            np.ascontiguousarray(postings.track_id, "<i8").tobytes(),
            np.ascontiguousarray(postings.offset, "<i4").tobytes(),
        )
    )


def decode_postings(data: bytes) -> Postings:
    """The Postings in `data`; ValueError if it is not a version this code writes."""
    if len(data) < _HEADER.size:
        raise ValueError("cached postings: truncated header")
    magic, n = _HEADER.unpack_from(data)
    if magic != _MAGIC or len(data) != _HEADER.size + 16 * n:
        raise ValueError(f"cached postings: unknown format {magic!r} or wrong length")
    body = memoryview(data)[_HEADER.size :]
    hash_index = np.frombuffer(body[: 4 * n], "<i4").astype(np.int32)
    track_id = np.frombuffer(body[4 * n : 12 * n], "<i8").astype(np.int64)
    offset = np.frombuffer(body[12 * n :], "<i4").astype(np.int32)
    return Postings(hash_index=hash_index, track_id=track_id, offset=offset)


def query_key(hashes: np.ndarray, cap: int) -> str:
    """A digest of the exact query (its sorted unique hashes) and the postings cap."""
    digest = hashlib.blake2b(np.ascontiguousarray(hashes, "<u4").tobytes(), digest_size=16)
    digest.update(cap.to_bytes(8, "little"))
    return digest.hexdigest()


class LookupCache(Protocol):
    """One shard's cache; `invalidate` is called after every write to the shard.

    `get(key)` returns the cached postings (or None) and a slot: the key qualified by the generation read
    BEFORE the shard is asked, so that a miss is `put` under the generation its answer belongs to (an answer
    read before a write can never be stored under the generation after it). A None slot: do not store.
    """

    def get(self, key: str) -> tuple[Postings | None, str | None]: ...

    def put(self, slot: str, postings: Postings) -> None: ...

    def invalidate(self) -> None: ...


class MemoryLookupCache:
    """An LRU of encoded postings in process memory, bounded in bytes, with a TTL."""

    def __init__(self, max_bytes: int, ttl_s: float) -> None:
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._generation = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> tuple[Postings | None, str | None]:
        now = time.monotonic()
        with self._lock:
            slot = f"{self._generation}:{key}"
            entry = self._entries.get(slot)
            if entry is None or entry[0] < now:
                self.misses += 1
                return None, slot
            self._entries.move_to_end(slot)
            self.hits += 1
        return decode_postings(entry[1]), slot

    def put(self, slot: str, postings: Postings) -> None:
        if len(postings) > MAX_CACHED_POSTINGS:
            return
        data = encode_postings(postings)
        with self._lock:
            if not slot.startswith(f"{self._generation}:"):
                return  # the shard changed since this answer was read
            full = slot
            old = self._entries.pop(full, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._entries[full] = (time.monotonic() + self._ttl_s, data)
            self._bytes += len(data)
            while self._bytes > self._max_bytes and self._entries:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= len(dropped)

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._bytes = 0


class RedisLookupCache:
    """Postings in Redis database `db`, keys `<prefix>:lookup:v1:<shard>:<generation>:<query key>`."""

    RETRY_AFTER_S = 5.0  # after a Redis fault, bypass the cache this long before trying again

    def __init__(self, client: redis.Redis, prefix: str, shard: str, ttl_s: float) -> None:
        self._redis = client
        self._prefix = f"{prefix}:lookup:v1:{shard}"
        self._generation_key = f"{prefix}:generation:v1:{shard}"
        self._shard = shard
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._down_until = 0.0
        self._bump_pending = False
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _usable(self) -> bool:
        if time.monotonic() < self._down_until:
            return False
        with self._lock:
            if not self._bump_pending:
                return True
        try:  # a write happened while Redis was away: retire what it may have cached before, first
            self._redis.incr(self._generation_key)
        except redis.RedisError as exc:
            self._fault(exc)
            return False
        with self._lock:
            self._bump_pending = False
        logger.info("redis cache for shard %s is back; generation bumped", self._shard)
        return True

    def _fault(self, exc: Exception) -> None:
        if time.monotonic() >= self._down_until:
            logger.warning(
                "redis cache for shard %s bypassed for %.0f s: %s", self._shard, self.RETRY_AFTER_S, exc
            )
        self._down_until = time.monotonic() + self.RETRY_AFTER_S

    def get(self, key: str) -> tuple[Postings | None, str | None]:
        if not self._usable():
            return None, None
        try:
            generation = self._redis.get(self._generation_key)
            slot = f"{self._prefix}:{int(generation or 0)}:{key}"
            data = self._redis.get(slot)
        except redis.RedisError as exc:
            self._fault(exc)
            return None, None
        if data is None:
            self.misses += 1
            return None, slot
        try:
            postings = decode_postings(data)
        except ValueError as exc:
            logger.warning("redis cache for shard %s: ignoring an unreadable entry: %s", self._shard, exc)
            return None, slot
        self.hits += 1
        return postings, slot

    def put(self, slot: str, postings: Postings) -> None:
        if len(postings) > MAX_CACHED_POSTINGS or time.monotonic() < self._down_until:
            return
        try:
            self._redis.set(slot, encode_postings(postings), px=self._ttl_ms)
        except redis.RedisError as exc:
            self._fault(exc)

    def invalidate(self) -> None:
        try:
            self._redis.incr(self._generation_key)
        except redis.RedisError as exc:
            with self._lock:
                self._bump_pending = True
            self._fault(exc)
