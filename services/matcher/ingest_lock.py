"""Who may store a given audio file right now: the check "no shard holds this file_sha1" and the write that
follows must not interleave with another ingest of the same audio, or two shards could each store it.

`LocalIngestLocks` serialises ingests of one sha1 inside this process. With Redis configured,
`RedisIngestLocks` also takes a Redis lock (redis-py's Lock: SET NX with a token, released by a
compare-and-delete script) so that several matcher replicas agree too. Redis down: a logged warning and the
local lock only, as before Redis was configured.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import redis

logger = logging.getLogger(__name__)


class IngestBusy(Exception):
    """Another ingest of the same audio holds the lock for longer than we wait."""


class LocalIngestLocks:
    def __init__(self, stripes: int = 64) -> None:
        self._stripes = [threading.Lock() for _ in range(stripes)]
        self._named: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        # a file_sha1 takes one of a fixed set of striped locks; other keys (`shard-ids:<shard>`, always
        # taken while a sha1 is held, never the other way) have locks of their own: no cycle can form
        if not key.startswith("shard-ids:"):
            return self._stripes[zlib.crc32(key.encode()) % len(self._stripes)]
        with self._guard:
            return self._named.setdefault(key, threading.Lock())

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Exclusive use of `key` (a file_sha1, or `shard-ids:<shard>`) in this process."""
        with self._lock(key):
            yield


class RedisIngestLocks(LocalIngestLocks):
    RETRY_AFTER_S = 5.0

    def __init__(self, client: redis.Redis, prefix: str, hold_s: float = 900.0, wait_s: float = 60.0) -> None:
        super().__init__()
        self._redis = client
        self._prefix = f"{prefix}:ingest-lock:v1"
        self._hold_s = hold_s  # expiry, should a replica die holding it
        self._wait_s = wait_s
        self._down_until = 0.0

    @contextmanager
    def hold(self, file_sha1: str) -> Iterator[None]:
        with super().hold(file_sha1):
            lock = None
            if time.monotonic() >= self._down_until:
                lock = self._redis.lock(
                    f"{self._prefix}:{file_sha1}", timeout=self._hold_s, blocking_timeout=self._wait_s
                )
                try:
                    if not lock.acquire():
                        raise IngestBusy(
                            f"another replica is storing {file_sha1} for over {self._wait_s:.0f} s"
                        )
                except redis.RedisError as exc:
                    logger.warning(
                        "ingest lock in Redis unavailable for %.0f s (%s); locking in this process only",
                        self.RETRY_AFTER_S,
                        exc,
                    )
                    self._down_until = time.monotonic() + self.RETRY_AFTER_S
                    lock = None
            try:
                yield
            finally:
                if lock is not None:
                    try:
                        lock.release()
                    except redis.RedisError as exc:  # it expires by itself
                        logger.warning("could not release the ingest lock of %s: %s", file_sha1, exc)
