"""All the shards of the matcher, behind one interface: fan-out lookups, routing of ingests, deletes.

Pure logic (no gRPC). Shard calls are blocking and run on a thread pool; each lookup waits for every shard
at most `deadline_s`, and a shard that misses it or fails is reported in the `FanoutReport` and left out of
the answer. A shard that could not be opened is retried on later calls, so it rejoins without a restart.

Track ids are per shard; across shards a track is named by a global id: track id * number of shards + shard
index. Scoring packs a track id and an offset into one int64, so global ids stay below 2**31.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from services.matcher.cache import LookupCache, query_key
from services.matcher.ingest_lock import LocalIngestLocks
from tunescout.common.config import StoreConfig
from tunescout.common.metrics import CACHE_LOOKUPS, SHARD_ERRORS, SHARD_LOOKUP_SECONDS
from tunescout.engine.errors import EngineError
from tunescout.store.shard import (
    FingerprintShard,
    IngestOutcome,
    Postings,
    ShardStats,
    TrackMeta,
    TrackRecord,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_GLOBAL_ID = (1 << 31) - 1  # see score.rank_offsets: (track << 32) + offset must fit an int64
REOPEN_INTERVAL_S = 5.0  # how often a shard that failed to open is tried again
STORED_HASHES_RECOUNT_S = 10.0  # how often the matcher recounts the catalogue that calibrates confidences
# larger shards keep their size tiers. One segment makes lookups 2.2x faster than the size tiers at
# 10,000 tracks (774 M postings, 4 GB): 11 -> 4.9 ms for a 10 s clip; merging them all took 25 s on 2 cores,
# in the background, with lookups and ingests going on (and as much free disk as the shard's size).
FULL_COMPACT_MAX_ROWS = 1_500_000_000
FULL_COMPACT_DISK_MARGIN = 1.5  # free disk wanted before a full merge, per byte of the shard's files


class ShardUnavailable(Exception):
    """A shard needed for a write or an exact answer did not answer."""


@dataclass
class FanoutReport:
    """Shards left out of one answer, with the reason (shard name -> reason)."""

    unavailable: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, shard: str, reason: str) -> None:
        with self.lock:
            if shard not in self.unavailable:
                SHARD_ERRORS.labels(shard).inc()
            self.unavailable.setdefault(shard, reason)


class ShardHandle:
    """One configured shard: opened lazily, reopened after a failure, with its lookup cache."""

    def __init__(
        self,
        index: int,
        config: StoreConfig,
        opener: Callable[[StoreConfig], FingerprintShard],
        cache: LookupCache | None,
    ) -> None:
        self.index = index
        self.config = config
        self.name = config.name
        self.cache = cache
        self._opener = opener
        self._shard: FingerprintShard | None = None
        self._error = "not opened yet"
        self._next_try = 0.0
        self._lock = threading.Lock()
        self.last_write = 0.0  # monotonic s of the last ingest or delete
        self.needs_compaction = True  # a write (or start-up) since the last compaction

    def shard(self) -> FingerprintShard:
        """The open shard; raises ShardUnavailable (with the last error) when it cannot be opened now."""
        shard = self._shard
        if shard is not None:
            return shard
        with self._lock:
            if self._shard is not None:
                return self._shard
            if time.monotonic() < self._next_try:
                raise ShardUnavailable(self._error)
            try:
                self._shard = self._opener(self.config)
            except (EngineError, OSError, ValueError) as exc:
                self._error = f"cannot open: {exc}"
                self._next_try = time.monotonic() + REOPEN_INTERVAL_S
                logger.warning("shard %s: %s", self.name, self._error)
                raise ShardUnavailable(self._error) from exc
            logger.info("shard %s (%s) open", self.name, self.config.database_type)
            return self._shard

    def lookup(self, hashes: np.ndarray, cap: int) -> Postings:
        slot = None
        if self.cache is not None:
            key = query_key(hashes, cap)
            cached, slot = self.cache.get(key)
            CACHE_LOOKUPS.labels(self.name, "hit" if cached is not None else "miss").inc()
            if cached is not None:
                return cached
        with SHARD_LOOKUP_SECONDS.labels(self.name).time():
            postings = self.shard().lookup(hashes, cap)
        if self.cache is not None and slot is not None:
            self.cache.put(slot, postings)
        return postings

    def invalidate(self) -> None:
        """After a write: drop cached lookups; the shard is worth compacting once writes pause."""
        self.last_write = time.monotonic()
        self.needs_compaction = True
        if self.cache is not None:
            self.cache.invalidate()

    def compact_if_idle(self, idle_s: float) -> bool:
        """Merge an embedded shard's segments into one when no write came for `idle_s`: lookups search one
        sorted file instead of several (2.6x faster at 165 tracks). True if it compacted."""
        shard = self._shard
        if shard is None or not self.needs_compaction or time.monotonic() - self.last_write < idle_s:
            return False
        summary_of = getattr(shard, "segment_summary", None)
        compact = getattr(shard, "compact", None)
        self.needs_compaction = False
        if summary_of is None or compact is None:
            return False
        summary = summary_of()
        rows = summary.level0_rows + sum(summary.file_rows)
        if summary.level0_segments + len(summary.file_rows) <= 1 or rows > FULL_COMPACT_MAX_ROWS:
            return False
        path = getattr(shard, "path", None)
        if path is not None:
            # the merged file is written beside its inputs: leave room for ingests meanwhile
            needed = int(summary.file_nbytes * FULL_COMPACT_DISK_MARGIN) + rows * 8
            free = shutil.disk_usage(path).free
            if free < needed:
                logger.warning(
                    "shard %s: not compacted: %d MB free on its disk, a full merge needs about %d MB",
                    self.name,
                    free // 1_000_000,
                    needed // 1_000_000,
                )
                return False
        began = time.monotonic()
        compact(full=True)
        logger.info(
            "shard %s compacted: %d postings in one segment (%.1f s)",
            self.name,
            rows,
            time.monotonic() - began,
        )
        return True

    def close(self) -> None:
        with self._lock:
            if self._shard is not None:
                self._shard.close()
                self._shard = None


@dataclass(frozen=True)
class StoredTrack:
    shard: str
    track: TrackRecord


class ShardSet:
    """The matcher's shards. Thread-safe; every method blocks (call it from a worker thread)."""

    def __init__(
        self, handles: list[ShardHandle], deadline_s: float, ingest_locks: LocalIngestLocks | None = None
    ) -> None:
        if not handles:
            raise ValueError("at least one shard is needed")
        self.handles = handles
        self.deadline_s = deadline_s
        self._pool = cf.ThreadPoolExecutor(max(4, 2 * len(handles)), thread_name_prefix="shard")
        self._ingest_locks = ingest_locks or LocalIngestLocks()
        self._sizes_lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # stored hashes by shard index, as last counted

    def global_id(self, shard_index: int, track_id: int) -> int:
        return track_id * len(self.handles) + shard_index

    def split_id(self, gid: int) -> tuple[int, int]:
        """(shard index, track id) of a global id."""
        track_id, index = divmod(gid, len(self.handles))
        return index, track_id

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for handle in self.handles:
            handle.close()

    def _fan_out(self, call: Callable[[ShardHandle], object], report: FanoutReport) -> dict[int, object]:
        """`call` on every shard concurrently; answers by shard index, failures into `report`."""
        futures = {self._pool.submit(call, h): h for h in self.handles}
        done, late = cf.wait(futures, timeout=self.deadline_s)
        answers: dict[int, object] = {}
        for future in late:
            future.cancel()
            report.fail(futures[future].name, f"no answer within the {self.deadline_s:g} s deadline")
        for future in done:
            handle = futures[future]
            try:
                answers[handle.index] = future.result()
            except (ShardUnavailable, EngineError) as exc:  # the backend is down or refuses: expected faults
                logger.warning("shard %s left out: %s", handle.name, exc)
                report.fail(handle.name, str(exc))
            except Exception as exc:  # any other fault degrades the answer instead of failing it
                logger.exception("shard %s failed", handle.name)
                report.fail(handle.name, f"{type(exc).__name__}: {exc}")
        return answers

    def lookup(self, hashes: np.ndarray, cap: int, report: FanoutReport) -> Postings:
        """Postings of `hashes` in every shard that answers, track ids made global."""
        answers = self._fan_out(lambda h: h.lookup(hashes, cap), report)
        parts = [p for p in answers.items() if len(p[1])]  # type: ignore[arg-type]
        if not parts:
            return Postings.empty()
        merged = [self._globalised(i, p) for i, p in parts]  # type: ignore[arg-type]
        if len(merged) == 1:
            return merged[0]
        hash_index = np.concatenate([p.hash_index for p in merged])
        order = np.argsort(hash_index, kind="stable")  # Postings are grouped by hash index
        return Postings(
            hash_index=hash_index[order],
            track_id=np.concatenate([p.track_id for p in merged])[order],
            offset=np.concatenate([p.offset for p in merged])[order],
        )

    def _globalised(self, index: int, postings: Postings) -> Postings:
        n = len(self.handles)
        if n == 1:
            return postings
        gids = postings.track_id * n + index
        if gids.size and int(gids.max()) > MAX_GLOBAL_ID:
            raise ValueError(
                f"track ids of shard {self.handles[index].name} are too large to score across {n} shards"
            )
        return Postings(postings.hash_index, gids, postings.offset)

    def tracks(self, gids: Iterable[int], report: FanoutReport | None = None) -> dict[int, StoredTrack]:
        """Live tracks by global id; ids of shards that fail now are left out (and put in `report`)."""
        return self._read_by_id(
            gids, "track metadata", lambda shard, ids: shard.get_tracks(ids), StoredTrack, report
        )

    def peaks(self, gids: Iterable[int], report: FanoutReport | None = None) -> dict[int, bytes]:
        """The stored peak blobs of tracks by global id; tracks stored without them, and those of shards
        that fail now (put in `report`: the answer stands on its triplets), are left out."""
        return self._read_by_id(
            gids, "track peaks", lambda shard, ids: shard.track_peaks(ids), lambda name, blob: blob, report
        )

    def _read_by_id(
        self,
        gids: Iterable[int],
        what: str,
        read: Callable[[FingerprintShard, list[int]], dict[int, Any]],
        wrap: Callable[[str, Any], T],
        report: FanoutReport | None,
    ) -> dict[int, T]:
        """`read` of each shard's local ids, shard by shard, keyed by global id (`wrap` takes the shard's
        name and each value); a shard that fails is logged, put in `report` and left out."""
        found: dict[int, T] = {}
        for index, locals_ in self._by_shard(gids).items():
            handle = self.handles[index]
            try:
                values = read(handle.shard(), locals_)
            except (ShardUnavailable, EngineError) as exc:
                logger.warning("shard %s: %s unavailable: %s", handle.name, what, exc)
                if report is not None:
                    report.fail(handle.name, f"{what} unavailable: {exc}")
                continue
            for local, value in values.items():
                found[self.global_id(index, local)] = wrap(handle.name, value)
        return found

    def _by_shard(self, gids: Iterable[int]) -> dict[int, list[int]]:
        """Global ids split by the shard they name (ids of shards not configured are left out)."""
        by_shard: dict[int, list[int]] = {}
        for gid in gids:
            index, local = self.split_id(int(gid))
            if index < len(self.handles):
                by_shard.setdefault(index, []).append(local)
        return by_shard

    def find_by_sha1(self, file_sha1: str) -> StoredTrack | None:
        """The track stored from that audio in any shard. ShardUnavailable if a shard cannot say."""
        report = FanoutReport()
        answers = self._fan_out(lambda h: h.shard().find_by_sha1(file_sha1), report)
        for index, record in answers.items():
            if record is not None:
                return StoredTrack(self.handles[index].name, record)  # type: ignore[arg-type]
        if report.unavailable:
            raise ShardUnavailable(_describe(report))
        return None

    def ingest(
        self, meta: TrackMeta, hashes: np.ndarray, offsets: np.ndarray, peaks: bytes = b""
    ) -> tuple[StoredTrack, bool]:
        """Store a track (with its peak blob, b"" = none) in the least-loaded shard unless some shard holds
        its audio already.

        Returns the stored track and whether it was there already. Every shard must answer the sha1 check
        (otherwise ShardUnavailable: storing it could make a duplicate).
        """
        with self._ingest_locks.hold(meta.file_sha1):
            existing = self.find_by_sha1(meta.file_sha1)
            if existing is not None:
                return existing, True
            report = FanoutReport()
            stats = self._fan_out(lambda h: h.shard().stats(), report)
            if not stats:
                raise ShardUnavailable(_describe(report))
            index = min(stats, key=lambda i: (stats[i].n_hashes, i))  # type: ignore[attr-defined]
            handle = self.handles[index]
            try:
                if handle.config.database_type == "clickhouse":
                    # ClickHouse hands out track ids as max + 1 (it has no sequences): writers of one shard
                    # take turns, across matcher replicas too when the locks live in Redis
                    with self._ingest_locks.hold(f"shard-ids:{handle.name}"):
                        outcome: IngestOutcome = handle.shard().ingest(meta, hashes, offsets, peaks)
                else:
                    outcome = handle.shard().ingest(meta, hashes, offsets, peaks)
            finally:
                handle.invalidate()
            return StoredTrack(handle.name, outcome.track), outcome.already_present

    def delete(self, file_sha1: str) -> StoredTrack | None:
        """Delete the track stored from that audio, wherever it is; None if no shard holds it."""
        with self._ingest_locks.hold(file_sha1):
            found = self.find_by_sha1(file_sha1)
            if found is None:
                return None
            handle = next(h for h in self.handles if h.name == found.shard)
            try:
                handle.shard().delete_track(found.track.track_id)
            finally:
                handle.invalidate()
            return found

    def compact_idle(self, idle_s: float) -> None:
        """Compact, one after the other, the shards that had no write for `idle_s` (see ShardHandle)."""
        for handle in self.handles:
            try:
                handle.compact_if_idle(idle_s)
            except Exception:  # a failed merge leaves the shard as it was; the next write retries
                logger.exception("shard %s: compaction failed", handle.name)

    def stored_hashes(self) -> int:
        """Hashes stored in all shards together as last counted (`count_stored_hashes`; 0 before), which
        calibrates match confidences: a bigger catalogue gives chance agreement more room. Never waits
        for a shard: recognitions read it."""
        with self._sizes_lock:
            return sum(self._sizes.values())

    def count_stored_hashes(self) -> int:
        """Count every shard's hashes now (on MySQL and ClickHouse a query each: the matcher does it in
        the background, every `STORED_HASHES_RECOUNT_S`); a shard that does not answer keeps its last
        count. Returns the new total."""
        answers = self._fan_out(lambda h: h.shard().stats(), FanoutReport())
        with self._sizes_lock:
            for index, st in answers.items():
                self._sizes[index] = st.n_hashes  # type: ignore[attr-defined]
            return sum(self._sizes.values())

    def stats(self) -> tuple[dict[str, ShardStats], FanoutReport]:
        report = FanoutReport()
        answers = self._fan_out(lambda h: h.shard().stats(), report)
        return {self.handles[i].name: s for i, s in answers.items()}, report  # type: ignore[misc]


def _describe(report: FanoutReport) -> str:
    return "; ".join(f"shard {name}: {reason}" for name, reason in sorted(report.unavailable.items()))
