"""EmbeddedShard: one fingerprint shard in a local directory, no server. An LSM of sorted segments with
SQLite as the manifest.

Directory layout:

    shard.sqlite            SQLite (WAL): meta, tracks, the list of live segment files, level-0 segments
    seg-0000000042.tsseg    immutable segment files (`segments.py`), mapped read-only
    LOCK                    advisory lock (flock): one process owns the directory

Frame addresses: each track owns a private range [base_frame, base_frame + n_frames) of a per-shard uint32
address space, and a posting is stored as (hash, value = base_frame + offset): one uint32 names both the track
and the offset (a segment packs it in the bits its own span of frames needs). Bases grow monotonically (next =
base + n_frames + GAP_FRAMES) and are never reused, so a lookup maps a value back through the sorted bases
(the same as `np.searchsorted(bases, value) - 1`, done with a per-1024-frame block index:
`segments.locate_tracks`). 2**32 frames (about 2 years of audio at 16 ms frames) fill a shard; past that,
ingest is refused: add a shard.

Write path: ingesting a track is ONE SQLite transaction (the track row and its postings as a small sorted
level-0 segment BLOB), so a crash leaves either the whole track or no trace. Level-0 BLOBs are held in
memory; every `level0_run_tracks` of them are merged in memory into one run (never written: it only
spares lookups from searching dozens of tiny segments). Compaction (size-tiered) merges level 0 into a
segment file once it holds `level0_max_tracks` tracks (or `level0_max_rows` rows), and merges
`tier_fanout` files of one size tier (tier = floor(log_fanout rows)) into one. A merged file is written
as `name.tmp`, fsynced, renamed, the directory fsynced; then one SQLite transaction swaps the manifest;
then the merged inputs are unlinked. Opening removes files the manifest does not list (leftovers of a
crash), and rewrites segments of segment format 1 in the current format (files in place, BLOBs in one
transaction). Deleted tracks are tombstones (`deleted` column), filtered from lookups at once and dropped
physically by merges.

Concurrency: one object serves many threads: writers (ingest, delete, compaction's manifest swap) take
one lock; lookups read an immutable snapshot (segment list + track table) that writers replace
atomically, and never wait. The merge itself runs outside the writer lock (inline, in the ingest call that
crossed a threshold, or in `compact`), so other threads keep ingesting meanwhile. One process owns a
shard directory: a second one (or a second EmbeddedShard on the same directory) gets a StoreError.
"""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import itertools
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunescout.engine.errors import StoreError, StoreFormatError
from tunescout.store.checks import check_meta, check_queries, sorted_postings
from tunescout.store.segments import (
    SEGMENT_FORMAT_VERSION,
    Segment,
    count_live_postings,
    decode_hashes,
    encode_segment,
    format_version_of,
    fsync_directory,
    gather_values,
    hash_bits_of,
    locate_tracks,
    merge_in_memory,
    merge_segments,
    upgrade_v1_bytes,
    upgrade_v1_file,
)
from tunescout.store.shard import IngestOutcome, Postings, ShardStats, TrackMeta, TrackRecord

logger = logging.getLogger(__name__)

STORE_FORMAT_VERSION = 1  # SQLite schema + directory layout; bump on any change, readers refuse unknown ones
FRAME_SPACE = 1 << 32  # frame addresses are uint32
GAP_FRAMES = 16  # frames between two tracks' ranges: an off-by-one in n_frames can never reach a neighbour
FRAME_BLOCK_BITS = 10  # 1024-frame (16 s) blocks index the frame space: 4 bytes per block, 16 MiB when full
SQLITE_NAME = "shard.sqlite"
EXPORT_CHUNK_ROWS = 1 << 22  # rows of a segment scanned at once by track_postings (about 40 MB)
LOCK_NAME = "LOCK"
# a lookup of at least twice this many hashes is split across `lookup_threads` threads (the kernels run
# without the GIL; each piece waits on its own memory loads, so the pieces overlap their cache misses)
LOOKUP_SPLIT_MIN = 4096
# segment files are paged in by a background thread after opening, this many bytes per readahead request
# (one POSIX_FADV_WILLNEED of a whole file reads only its first few MB): without it, the first lookups
# after a restart read the pages they touch from disk one by one (up to 4 s per query at 10,000 tracks)
PREFETCH_STEP = 8 << 20
_SEGMENT_NAME = re.compile(r"seg-\d{10}\.tsseg")
_SEGMENT_TMP = re.compile(r"seg-\d{10}\.tsseg(\.upgrade)?\.tmp")

# tracks.deleted: 0 live; 1 deleted, its postings may remain in segments (lookups filter them);
# 2 deleted and purged by a full compaction (no posting left anywhere)
_LIVE, _DELETED, _PURGED = 0, 1, 2

# a track's peaks (engine.verify), deleted with it. Added after format 2 shipped: a shard without it gets it
# when opened (older releases ignore the table)
_PEAKS_TABLE = """CREATE TABLE IF NOT EXISTS track_peaks (
    track_id INTEGER PRIMARY KEY REFERENCES tracks (track_id),
    data BLOB NOT NULL
)"""

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE tracks (
        track_id INTEGER PRIMARY KEY,
        file_sha1 TEXT NOT NULL,
        title TEXT NOT NULL,
        artist TEXT NOT NULL,
        album TEXT NOT NULL,
        year INTEGER,
        duration_s REAL NOT NULL,
        n_hashes INTEGER NOT NULL,
        base_frame INTEGER NOT NULL,
        n_frames INTEGER NOT NULL,
        created_at REAL NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    )""",
    # unique among live tracks only: a deleted track's file may be ingested again
    "CREATE UNIQUE INDEX tracks_live_sha1 ON tracks (file_sha1) WHERE deleted = 0",
    """CREATE TABLE segments (
        segment_id INTEGER PRIMARY KEY,
        file_name TEXT NOT NULL UNIQUE,
        n_rows INTEGER NOT NULL,
        n_bytes INTEGER NOT NULL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE level0_segments (
        segment_id INTEGER PRIMARY KEY,
        track_id INTEGER NOT NULL UNIQUE REFERENCES tracks (track_id),
        n_rows INTEGER NOT NULL,
        data BLOB NOT NULL
    )""",
    _PEAKS_TABLE,
)

_SELECT_TRACK = (
    "SELECT track_id, file_sha1, title, artist, album, year, duration_s, n_hashes, created_at FROM tracks"
)


@dataclass(frozen=True)
class SegmentSummary:
    """What the shard's LSM looks like now (for operators and benchmarks)."""

    level0_segments: int  # searched by every lookup: track BLOBs plus at most one in-memory run
    level0_tracks: int  # tracks whose postings sit in level 0 (one SQLite BLOB each)
    level0_rows: int
    file_rows: tuple[int, ...]  # rows of each segment file, oldest first
    file_nbytes: int  # bytes of all segment files


@dataclass(frozen=True, eq=False)
class _FileSegment:
    segment_id: int
    file_name: str
    segment: Segment


@dataclass(frozen=True, eq=False)
class _Level0Segment:
    """One in-memory level-0 segment: a track's BLOB, or a run merged in memory from several BLOBs."""

    segment_ids: tuple[int, ...]  # the level0_segments rows it holds
    segment: Segment


@dataclass(frozen=True, eq=False)
class _Snapshot:
    """What a lookup reads: immutable except `live`, which deletes clear in place (hiding at once)."""

    files: tuple[_FileSegment, ...]
    level0: tuple[_Level0Segment, ...]
    segments: tuple[Segment, ...]  # files then level 0
    bases: np.ndarray  # uint32, ascending: first frame address of each track
    track_ids: np.ndarray  # int64, parallel to bases
    live: np.ndarray  # bool, parallel to bases
    block_first: np.ndarray  # int32: index of the track holding each 2**FRAME_BLOCK_BITS block's start
    has_tombstones: bool  # some deleted track may still have postings in a segment


@dataclass(frozen=True, eq=False)
class _PreparedMerge:
    files: tuple[_FileSegment, ...]
    level0: tuple[_Level0Segment, ...]
    to_memory: bool  # merge level 0 into one in-memory run, not into a file
    segment_id: int  # of the file to write (unused for an in-memory merge)
    dead_starts: np.ndarray  # uint32 frame ranges of deleted tracks, sorted
    dead_ends: np.ndarray
    purged_track_ids: tuple[int, ...]  # set to _PURGED when this (full) merge commits


class _TrackTable:
    """Frame ranges of every track ever stored, in base order (= track id order), in growable arrays, and
    the block index `locate_tracks` reads: block_first[b] = last track whose base <= b << FRAME_BLOCK_BITS.

    Appending only writes past the end of views handed out earlier (entries of covered blocks are final,
    since later tracks start after them), so snapshots stay valid without copies.
    """

    def __init__(self) -> None:
        self._bases = np.empty(1024, np.uint32)
        self._ids = np.empty(1024, np.int64)
        self._live = np.empty(1024, np.bool_)
        self._block_first = np.empty(1024, np.int32)  # int32: a shard holds < 2**32 / GAP_FRAMES tracks
        self._n = 0
        self._n_blocks = 0

    def append(self, track_id: int, base_frame: int, end_frame: int, live: bool) -> None:
        """Add a track owning frames [base_frame, end_frame); ids and bases must ascend."""
        n = self._n
        if n and (track_id <= self._ids[n - 1] or base_frame <= self._bases[n - 1]):
            raise StoreError(
                f"track {track_id} at frame {base_frame} breaks the ascending order: store damaged"
            )
        self._bases = _grown(self._bases, n + 1)
        self._ids = _grown(self._ids, n + 1)
        self._live = _grown(self._live, n + 1)
        self._bases[n] = base_frame
        self._ids[n] = track_id
        self._live[n] = live
        self._n = n + 1
        n_blocks = max(self._n_blocks, ((end_frame - 1) >> FRAME_BLOCK_BITS) + 1)
        if n_blocks > self._n_blocks:
            self._block_first = _grown(self._block_first, n_blocks)
            first_frames = np.arange(self._n_blocks, n_blocks, dtype=np.int64) << FRAME_BLOCK_BITS
            found = np.searchsorted(self._bases[: self._n], first_frames, side="right") - 1
            self._block_first[self._n_blocks : n_blocks] = np.maximum(found, 0)
            self._n_blocks = n_blocks

    def set_dead(self, track_id: int) -> None:
        i = int(np.searchsorted(self._ids[: self._n], track_id))
        if i < self._n and self._ids[i] == track_id:
            self._live[i] = False

    def views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(bases, track ids, live flags, block index), each a view of the arrays as they are now."""
        n = self._n
        return self._bases[:n], self._ids[:n], self._live[:n], self._block_first[: self._n_blocks]


def _grown(array: np.ndarray, needed: int) -> np.ndarray:
    # double the capacity (amortised O(1) appends); the old array stays intact for older snapshots
    if needed <= array.shape[0]:
        return array
    bigger = np.empty(max(needed, 2 * array.shape[0]), array.dtype)
    bigger[: array.shape[0]] = array
    return bigger


class EmbeddedShard:
    """One fingerprint shard stored in directory `path` (created if missing). See the module docstring.

    `fingerprint_version` must equal the version the shard was created with (StoreFormatError otherwise).
    Tunables: `level0_max_tracks` / `level0_max_rows` bound the level-0 BLOBs before they are merged into a
    file; every `level0_run_tracks` new BLOBs are merged in memory (with the previous run) into one run,
    so lookups search at most about `level0_run_tracks` level-0 segments; `tier_fanout` files of one size
    tier are merged together; `merge_chunk_rows` bounds merge memory (about 32 bytes per row of a chunk).
    `lookup_threads` (default: the CPUs, at most 4) share a big lookup (see `LOOKUP_SPLIT_MIN`).
    `prefetch` asks the OS to read the segment files into its page cache in the background once opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fingerprint_version: int,
        level0_max_tracks: int = 32,
        level0_max_rows: int = 2_000_000,
        level0_run_tracks: int = 8,
        tier_fanout: int = 4,
        merge_chunk_rows: int = 1 << 18,
        lookup_threads: int | None = None,
        prefetch: bool = True,
    ) -> None:
        if lookup_threads is None:
            lookup_threads = min(4, os.cpu_count() or 1)
        if (
            min(level0_max_tracks, level0_max_rows, merge_chunk_rows, lookup_threads) < 1
            or min(tier_fanout, level0_run_tracks) < 2
        ):
            raise ValueError(
                "level0_max_tracks, level0_max_rows, merge_chunk_rows, lookup_threads must be >= 1; "
                "tier_fanout, level0_run_tracks >= 2"
            )
        self.path = Path(path)
        self.fingerprint_version = int(fingerprint_version)
        self._level0_max_tracks = level0_max_tracks
        self._level0_max_rows = level0_max_rows
        self._level0_run_tracks = level0_run_tracks
        self._tier_fanout = tier_fanout
        self._merge_chunk_rows = merge_chunk_rows
        self._lookup_threads = lookup_threads
        self._lookup_pool: cf.ThreadPoolExecutor | None = None  # started by the first big lookup
        self._pool_lock = threading.Lock()
        self.prefetcher: threading.Thread | None = None  # see `prefetch`
        self._db_path = self.path / SQLITE_NAME
        self._write_lock = threading.Lock()  # one writer: ingest, delete, manifest swaps
        self._read_lock = threading.Lock()  # the reader connection serves one statement at a time
        self._compact_lock = threading.Lock()  # one merge at a time
        self._closed = False
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self.path)
        try:
            self._writer = _connect(self._db_path)
            self._init_or_check_meta()
            self._reader = _connect(self._db_path)
            self._reader.execute("PRAGMA query_only = ON")
            self._load()
            prepared = self._prepare_merge(full=False, memory_only=True)
            if prepared is not None:  # rebuild the in-memory level-0 run; file merges wait for an ingest
                self._run_merge(prepared)
        except sqlite3.Error as exc:  # e.g. "file is not a database"
            self._release()
            raise StoreError(f"cannot open shard {self.path}: SQLite says {exc}") from exc
        except BaseException:
            self._release()
            raise
        logger.info(
            "opened shard %s: %d tracks, %d postings, %d segment files, %d level-0 segments",
            self.path,
            self._n_live_tracks,
            self._n_live_hashes,
            len(self._snapshot.files),
            len(self._snapshot.level0),
        )
        if prefetch and hasattr(os, "posix_fadvise"):
            paths = [self.path / f.file_name for f in self._snapshot.files]
            self.prefetcher = threading.Thread(
                target=self._prefetch, args=(paths,), name="prefetch", daemon=True
            )
            self.prefetcher.start()

    # -- opening ---------------------------------------------------------------------------------------

    def _prefetch(self, paths: list[Path]) -> None:
        """Readahead requests over each file, step by step, until done or the shard closes (advice only:
        the OS reads what memory allows; a file merged away meanwhile is simply skipped)."""
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                size = os.fstat(fd).st_size
                for offset in range(0, size, PREFETCH_STEP):
                    if self._closed:
                        return
                    os.posix_fadvise(fd, offset, PREFETCH_STEP, os.POSIX_FADV_WILLNEED)
            except OSError as exc:
                logger.debug("prefetch of %s stopped: %s", path, exc)
            finally:
                os.close(fd)

    def _init_or_check_meta(self) -> None:
        conn = self._conn()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if tables:
                raise StoreFormatError(
                    f"{self._db_path} is not a tunescout shard (tables {sorted(tables)}); point the store at "
                    "an empty or a shard directory"
                )
            with self._transaction() as txn:
                for statement in _SCHEMA:
                    txn.execute(statement)
                txn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("format_version", str(STORE_FORMAT_VERSION)),
                        ("fingerprint_version", str(self.fingerprint_version)),
                        ("created_at", repr(time.time())),
                    ],
                )
            logger.info("created shard %s (format %d)", self.path, STORE_FORMAT_VERSION)
            return
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        found = meta.get("format_version")
        if found != str(STORE_FORMAT_VERSION):
            raise StoreFormatError(
                f"shard {self.path} has store format version {found}; this tunescout supports version "
                f"{STORE_FORMAT_VERSION} only. Open it with the tunescout release that wrote it (or a newer "
                "one that can migrate it)."
            )
        stored = meta.get("fingerprint_version")
        if stored != str(self.fingerprint_version):
            raise StoreFormatError(
                f"shard {self.path} holds fingerprints of version {stored}; this engine computes version "
                f"{self.fingerprint_version}, whose hashes would never match them. Re-ingest the tracks into "
                "a new shard, or run the tunescout release that computes that version."
            )
        if "track_peaks" not in tables:
            with self._transaction() as txn:
                txn.execute(_PEAKS_TABLE)

    def _upgrade_file(self, file_path: Path) -> None:
        with open(file_path, "rb") as f:
            version = format_version_of(f.read(16))
        if version == 1:
            started = time.perf_counter()
            layout = upgrade_v1_file(file_path)
            logger.info(
                "shard %s: rewrote %s (%d postings) in segment format %d in %.1f s",
                self.path,
                file_path.name,
                layout.n_rows,
                SEGMENT_FORMAT_VERSION,
                time.perf_counter() - started,
            )

    def _upgrade_level0(self, rows: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """Level-0 BLOBs of segment format 1 re-encoded in the current format, in one transaction."""
        old = [(i, data) for i, data in rows if format_version_of(data) == 1]
        if not old:
            return rows
        new = {i: upgrade_v1_bytes(data, source=f"{self._db_path} level-0 segment {i}") for i, data in old}
        with self._transaction() as txn:
            txn.executemany(
                "UPDATE level0_segments SET data = ? WHERE segment_id = ?", [(d, i) for i, d in new.items()]
            )
        logger.info(
            "shard %s: rewrote %d level-0 segments in segment format %d",
            self.path,
            len(new),
            SEGMENT_FORMAT_VERSION,
        )
        return [(i, new.get(i, data)) for i, data in rows]

    def _load(self) -> None:
        conn = self._conn()
        files: list[_FileSegment] = []
        for segment_id, file_name, n_rows in conn.execute(
            "SELECT segment_id, file_name, n_rows FROM segments ORDER BY segment_id"
        ).fetchall():
            file_path = self.path / file_name
            if not file_path.exists():
                raise StoreError(
                    f"shard {self.path} lists segment {file_name} but the file is missing: the shard is "
                    "damaged; restore the directory from a backup"
                )
            self._upgrade_file(file_path)
            segment = Segment.open_file(file_path, expected_fingerprint_version=self.fingerprint_version)
            if segment.n_rows != n_rows:
                raise StoreError(
                    f"{file_path} has {segment.n_rows} rows, the manifest says {n_rows}: damaged"
                )
            files.append(_FileSegment(segment_id, file_name, segment))
        self._remove_leftovers({f.file_name for f in files})

        level0: list[_Level0Segment] = []
        for segment_id, data in self._upgrade_level0(
            conn.execute("SELECT segment_id, data FROM level0_segments ORDER BY segment_id").fetchall()
        ):
            segment = Segment.from_bytes(
                data,
                source=f"{self._db_path} level-0 segment {segment_id}",
                expected_fingerprint_version=self.fingerprint_version,
            )
            segment.verify()  # small, and read entirely anyway
            level0.append(_Level0Segment((segment_id,), segment))

        self._tracks = _TrackTable()
        self._next_base_frame = 0
        self._n_live_tracks = 0
        self._n_live_hashes = 0
        self._n_pending_deleted = 0
        for track_id, base_frame, n_frames, deleted, n_hashes in conn.execute(
            "SELECT track_id, base_frame, n_frames, deleted, n_hashes FROM tracks ORDER BY track_id"
        ):
            self._tracks.append(track_id, base_frame, base_frame + n_frames, deleted == _LIVE)
            self._next_base_frame = base_frame + n_frames + GAP_FRAMES
            if deleted == _LIVE:
                self._n_live_tracks += 1
                self._n_live_hashes += n_hashes
            elif deleted == _DELETED:
                self._n_pending_deleted += 1
        max_id = max((f.segment_id for f in files), default=0)
        self._next_segment_id = max_id + 1
        self._snapshot = self._make_snapshot(tuple(files), tuple(level0))

    def _remove_leftovers(self, listed: set[str]) -> None:
        removed = []
        for entry in os.scandir(self.path):
            unlisted = _SEGMENT_NAME.fullmatch(entry.name) and entry.name not in listed
            if unlisted or _SEGMENT_TMP.fullmatch(entry.name):
                os.unlink(entry.path)
                removed.append(entry.name)
        if removed:
            fsync_directory(self.path)
            logger.warning(
                "shard %s: removed files left by an interrupted compaction: %s", self.path, removed
            )

    # -- the protocol ----------------------------------------------------------------------------------

    def ingest(
        self, meta: TrackMeta, hashes: np.ndarray, offsets: np.ndarray, peaks: bytes = b""
    ) -> IngestOutcome:
        """Store a track, its fingerprints and its peaks in one transaction; see `FingerprintShard.ingest`.

        Raises ValueError for malformed input and StoreError when the shard's frame space is full. A merge
        that this call triggers runs before it returns; a failing merge is logged, not raised (the track
        itself is stored).
        """
        check_meta(meta)
        row_hashes, row_offsets, n_frames = sorted_postings(hashes, offsets)
        with self._write_lock:
            self._check_open()
            existing = _select_live_by_sha1(self._conn(), meta.file_sha1)
            if existing is not None:
                return IngestOutcome(existing, already_present=True)
            base_frame = self._next_base_frame
            if base_frame + n_frames + GAP_FRAMES > FRAME_SPACE:
                raise StoreError(
                    f"shard {self.path} is full: {base_frame} of {FRAME_SPACE} frame addresses used, the "
                    f"track needs {n_frames}. Add a shard and ingest new tracks there."
                )
            # adding a constant keeps rows sorted by (hash, value): the sort happened outside the lock.
            # In place, and the rows are let go once encoded: a 3-hour track's rows are 31 MB, and the
            # peak RSS of its ingest is bounded (bench/engine_bench.py)
            row_values = row_offsets
            row_values += np.uint32(base_frame)
            n_rows = int(row_hashes.shape[0])
            blob = b""
            if n_rows:
                hash_bits = hash_bits_of(int(row_hashes[-1]))
                # the smallest layout (the default): level 0 is searched through in-memory runs, not this blob
                blob = encode_segment(
                    row_hashes, row_values, fingerprint_version=self.fingerprint_version, hash_bits=hash_bits
                )
            del row_hashes, row_offsets, row_values
            created_at = time.time()
            with self._transaction() as txn:
                track_id = _insert_track(txn, meta, n_rows, base_frame, n_frames, created_at)
                segment_id = _insert_level0(txn, track_id, n_rows, blob) if n_rows else None
                if peaks:
                    txn.execute("INSERT INTO track_peaks (track_id, data) VALUES (?, ?)", (track_id, peaks))
            record = TrackRecord.stored(track_id, meta, n_rows, created_at)
            self._tracks.append(track_id, base_frame, base_frame + n_frames, live=True)
            self._next_base_frame = base_frame + n_frames + GAP_FRAMES
            self._n_live_tracks += 1
            self._n_live_hashes += n_rows
            level0 = self._snapshot.level0
            if segment_id is not None:
                source = f"{self._db_path} level-0 segment {segment_id}"
                level0 += (_Level0Segment((segment_id,), Segment.from_bytes(blob, source=source)),)
            self._snapshot = self._make_snapshot(self._snapshot.files, level0)
        logger.debug(
            "shard %s: ingested track %d (%d postings, %d frames)", self.path, track_id, n_rows, n_frames
        )
        self._maybe_compact()
        return IngestOutcome(record, already_present=False)

    def lookup(self, hashes: np.ndarray, max_postings_per_hash: int = 0) -> Postings:
        """Postings of the query hashes (uint32, sorted ascending, unique) in live tracks.

        With `max_postings_per_hash` > 0, a hash with more live postings than that is dropped entirely.
        Reads a snapshot: never waits for writers. Cost: two kernel passes per segment (count, then copy),
        then one table load per posting to find its track (`locate_tracks`).
        """
        queries = check_queries(hashes)
        if max_postings_per_hash < 0:
            raise ValueError(f"max_postings_per_hash must be >= 0, got {max_postings_per_hash}")
        self._check_open()
        snapshot = self._snapshot
        parts = min(self._lookup_threads, queries.shape[0] // LOOKUP_SPLIT_MIN)
        if parts < 2:
            return _lookup(snapshot, queries, int(max_postings_per_hash))
        # each hash's postings are independent of the others': contiguous pieces of the sorted queries,
        # looked up concurrently, concatenate into the whole answer (hash indexes shifted by piece starts)
        bounds = np.linspace(0, queries.shape[0], parts + 1).astype(np.int64)
        pool = self._pool()
        try:
            futures = [
                pool.submit(_lookup, snapshot, queries[a:b], int(max_postings_per_hash))
                for a, b in itertools.pairwise(bounds[1:])
            ]
        except RuntimeError as exc:  # close() shut the pool down after _pool() handed it out
            raise StoreError(f"shard {self.path} is closed") from exc
        pieces = [_lookup(snapshot, queries[: bounds[1]], int(max_postings_per_hash))]  # this thread's piece
        pieces += [f.result() for f in futures]
        return Postings(
            hash_index=np.concatenate(
                [p.hash_index + np.int32(a) for p, a in zip(pieces, bounds, strict=False)]
            ),
            track_id=np.concatenate([p.track_id for p in pieces]),
            offset=np.concatenate([p.offset for p in pieces]),
        )

    def _pool(self) -> cf.ThreadPoolExecutor:
        with self._pool_lock:
            self._check_open()  # a lookup racing close() must not start a pool that nothing shuts down
            if self._lookup_pool is None:
                self._lookup_pool = cf.ThreadPoolExecutor(
                    self._lookup_threads - 1, thread_name_prefix="lookup"
                )
            return self._lookup_pool

    def find_by_sha1(self, file_sha1: str) -> TrackRecord | None:
        with self._read_lock:
            self._check_open()
            return _select_live_by_sha1(self._read_conn(), file_sha1)

    def get_tracks(self, track_ids: Iterable[int]) -> dict[int, TrackRecord]:
        rows = self._live_tracks(_SELECT_TRACK, track_ids)
        return {row[0]: _track_record(row) for row in rows}

    def track_peaks(self, track_ids: Iterable[int]) -> dict[int, bytes]:
        rows = self._live_tracks(
            "SELECT tracks.track_id, track_peaks.data FROM tracks JOIN track_peaks USING (track_id)",
            track_ids,
        )
        return {int(row[0]): bytes(row[1]) for row in rows}

    def _live_tracks(self, select: str, track_ids: Iterable[int], order_by: str = "") -> list[tuple]:
        """Rows of `select` (a SELECT ... FROM tracks) for the live tracks among `track_ids`."""
        wanted = sorted({int(t) for t in track_ids})
        if not wanted:
            return []
        with self._read_lock:
            self._check_open()
            return (
                self._read_conn()
                .execute(
                    f"{select} WHERE deleted = 0 AND tracks.track_id IN (SELECT value FROM json_each(?)) "
                    + order_by,
                    (json.dumps(wanted),),
                )
                .fetchall()
            )

    def delete_track(self, track_id: int) -> bool:
        """Tombstone a track in one transaction; its postings vanish from lookups before this returns and
        are dropped from disk by later merges (all of them by `compact(full=True)`)."""
        with self._write_lock:
            self._check_open()
            with self._transaction() as txn:
                row = txn.execute(
                    "SELECT n_hashes FROM tracks WHERE track_id = ? AND deleted = 0", (int(track_id),)
                ).fetchone()
                if row is None:
                    return False
                txn.execute("UPDATE tracks SET deleted = ? WHERE track_id = ?", (_DELETED, int(track_id)))
                txn.execute("DELETE FROM track_peaks WHERE track_id = ?", (int(track_id),))
            self._tracks.set_dead(int(track_id))
            self._n_live_tracks -= 1
            self._n_live_hashes -= row[0]
            self._n_pending_deleted += 1
            self._snapshot = self._make_snapshot(self._snapshot.files, self._snapshot.level0)
        logger.info("deleted track %d from shard %s", track_id, self.path)
        return True

    def stats(self) -> ShardStats:
        """Live tracks and postings (kept as counters, no scan) and bytes of segment files plus SQLite."""
        with self._write_lock:
            self._check_open()
            n_tracks, n_hashes = self._n_live_tracks, self._n_live_hashes
            files = self._snapshot.files
        nbytes = sum(f.segment.nbytes for f in files)
        for name in (SQLITE_NAME, SQLITE_NAME + "-wal"):
            try:
                nbytes += (self.path / name).stat().st_size
            except FileNotFoundError:
                pass
        return ShardStats(n_tracks=n_tracks, n_hashes=n_hashes, bytes_on_disk=nbytes)

    def list_tracks(self) -> list[TrackRecord]:
        with self._read_lock:
            self._check_open()
            rows = (
                self._read_conn().execute(_SELECT_TRACK + " WHERE deleted = 0 ORDER BY track_id").fetchall()
            )
        return [_track_record(row) for row in rows]

    def track_postings(self, track_ids: Iterable[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """One pass over every segment, `EXPORT_CHUNK_ROWS` rows at a time, keeping the rows whose frame
        address falls in a wanted track's range."""
        rows = self._live_tracks(
            "SELECT track_id, base_frame, n_frames FROM tracks", track_ids, "ORDER BY base_frame"
        )
        if not rows:
            return {}
        ids = np.array([r[0] for r in rows], np.int64)
        starts = np.array([r[1] for r in rows], np.int64)
        ends = starts + np.array([r[2] for r in rows], np.int64)
        parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        for segment in self._snapshot.segments:
            low_bits = segment.layout.low_bits
            for a in range(0, segment.n_rows, EXPORT_CHUNK_ROWS):
                b = min(segment.n_rows, a + EXPORT_CHUNK_ROWS)
                values = segment.values(a, b).astype(np.int64)
                which = np.searchsorted(starts, values, side="right") - 1
                keep = (which >= 0) & (values < ends[np.maximum(which, 0)])
                if not keep.any():
                    continue
                hashes = np.empty(b - a, np.uint32)
                decode_hashes(segment.directory, segment.low_words, low_bits, a, b, hashes)
                rows_kept = np.flatnonzero(keep)
                for t in np.unique(which[rows_kept]):
                    mine = rows_kept[which[rows_kept] == t]
                    parts[int(ids[t])].append((hashes[mine], (values[mine] - starts[t]).astype(np.int32)))
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for track_id, pieces in parts.items():
            h = np.concatenate([p[0] for p in pieces])
            o = np.concatenate([p[1] for p in pieces])
            order = np.lexsort((o, h))
            out[track_id] = (h[order], o[order])
        return out

    def close(self) -> None:
        """Wait for a running merge, then release connections, mapped files and the directory lock."""
        with self._compact_lock, self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._snapshot = self._make_snapshot((), ())
            self._release()
        with self._pool_lock:
            if self._lookup_pool is not None:
                self._lookup_pool.shutdown(wait=True)
                self._lookup_pool = None
        logger.info("closed shard %s", self.path)

    def __enter__(self) -> EmbeddedShard:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    # -- operators -------------------------------------------------------------------------------------

    def compact(self, full: bool = False) -> None:
        """Run the merges the size tiers call for; with `full`, first merge everything into one segment
        file and drop every deleted track's postings for good. Blocks while another merge runs."""
        with self._compact_lock:
            if full:
                prepared = self._prepare_merge(full=True)
                if prepared is not None:
                    self._run_merge(prepared)
            while (prepared := self._prepare_merge(full=False)) is not None:
                self._run_merge(prepared)

    def segment_summary(self) -> SegmentSummary:
        snapshot = self._snapshot
        return SegmentSummary(
            level0_segments=len(snapshot.level0),
            level0_tracks=sum(len(s.segment_ids) for s in snapshot.level0),
            level0_rows=sum(s.segment.n_rows for s in snapshot.level0),
            file_rows=tuple(f.segment.n_rows for f in snapshot.files),
            file_nbytes=sum(f.segment.nbytes for f in snapshot.files),
        )

    # -- compaction ------------------------------------------------------------------------------------

    def _maybe_compact(self) -> None:
        if not self._compact_lock.acquire(blocking=False):
            return  # the running merge loops until no threshold is crossed: it will pick this up
        try:
            while (prepared := self._prepare_merge(full=False)) is not None:
                self._run_merge(prepared)
        except Exception:
            if not self._closed:
                logger.exception(
                    "shard %s: merge failed; tracks stay stored, the next ingest retries", self.path
                )
        finally:
            self._compact_lock.release()

    def _prepare_merge(self, full: bool, memory_only: bool = False) -> _PreparedMerge | None:
        # plan, tombstones and segment id under one lock: the tombstones then all lie in the planned inputs
        with self._write_lock:
            self._check_open()
            snapshot = self._snapshot
            files, level0, to_memory = self._plan(snapshot, full, memory_only)
            if not files and not level0:
                return None
            rows = (
                self._conn()
                .execute(
                    "SELECT track_id, base_frame, n_frames, deleted FROM tracks WHERE deleted != 0 "
                    "ORDER BY base_frame"
                )
                .fetchall()
            )
            segment_id = -1
            if not to_memory:
                segment_id = self._next_segment_id
                self._next_segment_id += 1
        dead_starts = np.array([r[1] for r in rows], dtype=np.uint32)
        dead_ends = np.array([r[1] + r[2] for r in rows], dtype=np.uint32)
        purged = tuple(r[0] for r in rows if r[3] == _DELETED) if full else ()
        return _PreparedMerge(files, level0, to_memory, segment_id, dead_starts, dead_ends, purged)

    def _plan(
        self, snapshot: _Snapshot, full: bool, memory_only: bool = False
    ) -> tuple[tuple[_FileSegment, ...], tuple[_Level0Segment, ...], bool]:
        """What to merge next: (files, level-0 segments, into memory?); nothing to do if both are empty."""
        singles = sum(1 for s in snapshot.level0 if len(s.segment_ids) == 1)
        if memory_only:
            return ((), snapshot.level0, True) if singles >= self._level0_run_tracks else ((), (), False)
        if full:
            if not snapshot.level0 and len(snapshot.files) <= 1 and not self._n_pending_deleted:
                return (), (), False
            return snapshot.files, snapshot.level0, False
        level0_tracks = sum(len(s.segment_ids) for s in snapshot.level0)
        level0_rows = sum(s.segment.n_rows for s in snapshot.level0)
        if level0_tracks >= self._level0_max_tracks or level0_rows >= self._level0_max_rows:
            return (), snapshot.level0, False
        if singles >= self._level0_run_tracks:
            return (), snapshot.level0, True
        tiers: dict[int, list[_FileSegment]] = defaultdict(list)
        for f in snapshot.files:
            tiers[self._tier(f.segment.n_rows)].append(f)
        for tier in sorted(tiers):
            if len(tiers[tier]) >= self._tier_fanout:
                return tuple(tiers[tier][: self._tier_fanout]), (), False
        return (), (), False

    def _tier(self, n_rows: int) -> int:
        tier, size = 0, max(1, n_rows)
        while size >= self._tier_fanout:
            size //= self._tier_fanout
            tier += 1
        return tier

    def _run_merge(self, prepared: _PreparedMerge) -> None:
        if prepared.to_memory:
            self._merge_level0_in_memory(prepared)
            return
        inputs = [f.segment for f in prepared.files] + [s.segment for s in prepared.level0]
        name = f"seg-{prepared.segment_id:010d}.tsseg"
        final = self.path / name
        tmp = self.path / (name + ".tmp")
        started = time.perf_counter()
        try:
            layout = merge_segments(
                inputs,
                tmp,
                fingerprint_version=self.fingerprint_version,
                dead_starts=prepared.dead_starts,
                dead_ends=prepared.dead_ends,
                chunk_rows=self._merge_chunk_rows,
            )
            new_file = None
            if layout is not None:
                os.replace(tmp, final)
                fsync_directory(self.path)  # the rename is durable before the manifest points at it
                segment = Segment.open_file(final, expected_fingerprint_version=self.fingerprint_version)
                new_file = _FileSegment(prepared.segment_id, name, segment)
        except BaseException:
            tmp.unlink(missing_ok=True)
            final.unlink(missing_ok=True)
            raise
        with self._write_lock:
            try:
                self._check_open()
                self._swap_manifest(prepared, new_file)
            except BaseException:
                # nothing committed (a failed transaction is rolled back): the new file is an orphan
                final.unlink(missing_ok=True)
                raise
            self._apply_merge(prepared, new_file)  # same lock hold: no writer sees manifest and memory apart
        for f in prepared.files:
            try:
                (self.path / f.file_name).unlink()
            except OSError as exc:  # harmless: the next open removes unlisted files
                logger.warning("shard %s: cannot remove merged segment %s: %s", self.path, f.file_name, exc)
        rows_in = sum(s.n_rows for s in inputs)
        rows_out = layout.n_rows if layout is not None else 0
        logger.info(
            "shard %s: merged %d files + %d level-0 segments (%d rows) into %s (%d rows, %d dropped) "
            "in %.2f s",
            self.path,
            len(prepared.files),
            len(prepared.level0),
            rows_in,
            name if layout is not None else "nothing",
            rows_out,
            rows_in - rows_out,
            time.perf_counter() - started,
        )

    def _merge_level0_in_memory(self, prepared: _PreparedMerge) -> None:
        """Replace the level-0 segments by one in-memory run: lookups search one segment, not dozens.
        Nothing is written: SQLite keeps one BLOB per track, and opening rebuilds the run from them."""
        started = time.perf_counter()
        blob = merge_in_memory(
            [s.segment for s in prepared.level0],
            fingerprint_version=self.fingerprint_version,
            dead_starts=prepared.dead_starts,
            dead_ends=prepared.dead_ends,
        )
        segment_ids = tuple(sorted(i for s in prepared.level0 for i in s.segment_ids))
        source = f"{self._db_path} level-0 run of {len(segment_ids)} tracks"
        run = _Level0Segment(segment_ids, Segment.from_bytes(blob, source=source))
        with self._write_lock:
            self._check_open()
            merged = {s.segment_ids for s in prepared.level0}
            level0 = (run, *(s for s in self._snapshot.level0 if s.segment_ids not in merged))
            self._snapshot = self._make_snapshot(self._snapshot.files, level0)
        logger.debug(
            "shard %s: merged %d level-0 tracks into an in-memory run of %d rows in %.3f s",
            self.path,
            len(segment_ids),
            run.segment.n_rows,
            time.perf_counter() - started,
        )

    def _swap_manifest(self, prepared: _PreparedMerge, new_file: _FileSegment | None) -> None:
        """ONE transaction replaces the merged inputs by the new file in the manifest (caller holds the
        writer lock). Before it commits, a crash leaves the old state; after, the new one."""
        with self._transaction() as txn:
            if new_file is not None:
                txn.execute(
                    "INSERT INTO segments (segment_id, file_name, n_rows, n_bytes, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        new_file.segment_id,
                        new_file.file_name,
                        new_file.segment.n_rows,
                        new_file.segment.nbytes,
                        time.time(),
                    ),
                )
            txn.executemany(
                "DELETE FROM segments WHERE segment_id = ?", [(f.segment_id,) for f in prepared.files]
            )
            txn.executemany(
                "DELETE FROM level0_segments WHERE segment_id = ?",
                [(i,) for s in prepared.level0 for i in s.segment_ids],
            )
            txn.executemany(
                "UPDATE tracks SET deleted = ? WHERE track_id = ? AND deleted = ?",
                [(_PURGED, t, _DELETED) for t in prepared.purged_track_ids],
            )
        try:  # hand the merged blobs' pages back to the filesystem; harmless if it fails
            conn = self._conn()
            # the pragma frees one page per step and returns no row, so execute() (one step) freed one
            # page and a shard kept every level-0 page it ever wrote; executescript() steps it to the
            # end. The checkpoint then copies the shrunken database out of the WAL and truncates both.
            conn.executescript("PRAGMA incremental_vacuum;")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            logger.warning("shard %s: incremental vacuum failed: %s", self.path, exc)

    def _apply_merge(self, prepared: _PreparedMerge, new_file: _FileSegment | None) -> None:
        """Publish the snapshot that matches the committed manifest (caller holds the writer lock)."""
        merged_files = {f.segment_id for f in prepared.files}
        merged_level0 = {s.segment_ids for s in prepared.level0}
        files = tuple(f for f in self._snapshot.files if f.segment_id not in merged_files)
        if new_file is not None:
            files += (new_file,)
        level0 = tuple(s for s in self._snapshot.level0 if s.segment_ids not in merged_level0)
        self._n_pending_deleted -= len(prepared.purged_track_ids)
        self._snapshot = self._make_snapshot(files, level0)

    # -- plumbing --------------------------------------------------------------------------------------

    def _make_snapshot(
        self, files: tuple[_FileSegment, ...], level0: tuple[_Level0Segment, ...]
    ) -> _Snapshot:
        bases, track_ids, live, block_first = self._tracks.views()
        return _Snapshot(
            files=files,
            level0=level0,
            segments=tuple(f.segment for f in files) + tuple(s.segment for s in level0),
            bases=bases,
            track_ids=track_ids,
            live=live,
            block_first=block_first,
            has_tombstones=self._n_pending_deleted > 0,
        )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"shard {self.path}: SQLite failed: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StoreError(f"shard {self.path} is closed")
        return self._writer

    def _read_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StoreError(f"shard {self.path} is closed")
        return self._reader

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"shard {self.path} is closed")

    def _release(self) -> None:
        for conn in (self._writer, self._reader):
            if conn is not None:
                conn.close()
        self._writer = None
        self._reader = None
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1


# -- helpers -------------------------------------------------------------------------------------------


def _lock_directory(path: Path) -> int:
    """Take the directory's advisory lock (released when the process dies); StoreError if it is held."""
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise StoreError(
            f"shard {path} is already open (lock held by process {holder}); an embedded shard belongs to one "
            "process and one EmbeddedShard object: share that object, or stop the other process"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=30.0)
    # takes effect when the file is created: pages freed by merged level-0 blobs go back to the disk
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        conn.close()
        raise StoreError(
            f"{db_path}: SQLite refused WAL mode (got {mode}); put the shard on a local filesystem"
        )
    # FULL: the manifest swap must be durable before merged files are unlinked; NORMAL could roll it back
    # on power loss and leave the manifest pointing at deleted files. Costs ~1 fsync per ingested track.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA journal_size_limit = 16777216")  # bytes: truncate the WAL after a big ingest
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _lookup(snapshot: _Snapshot, queries: np.ndarray, cap: int) -> Postings:
    n_queries = queries.shape[0]
    segments = snapshot.segments
    if n_queries == 0 or not segments:
        return Postings.empty()
    ranges = [segment.find_ranges(queries) for segment in segments]  # pass 1: count
    counts = np.zeros(n_queries, np.int64)
    for starts, ends in ranges:
        counts += ends - starts
    keep = counts > 0
    if cap > 0:
        over = np.flatnonzero(counts > cap)
        if over.shape[0] and snapshot.has_tombstones:
            # deleted tracks' postings must not push a hash over the cap: recount those hashes, live only
            live_counts = np.zeros(over.shape[0], np.int64)
            for segment, (starts, ends) in zip(segments, ranges, strict=True):
                count_live_postings(
                    segment.value_words,
                    segment.layout.value_bits,
                    segment.layout.value_min,
                    starts,
                    ends,
                    over,
                    snapshot.bases,
                    snapshot.live,
                    cap,
                    live_counts,
                )
            over = over[live_counts > cap]
        keep[over] = False
        counts[over] = 0
    total = int(counts.sum())
    if total == 0:
        return Postings.empty()
    write_pos = np.zeros(n_queries, np.int64)
    np.cumsum(counts[:-1], out=write_pos[1:])
    values = np.empty(total, np.uint32)
    for segment, (starts, ends) in zip(segments, ranges, strict=True):  # pass 2: fill
        layout = segment.layout
        gather_values(
            segment.value_words,
            layout.value_bits,
            layout.value_min,
            starts,
            ends,
            keep,
            write_pos,
            values,
            segment.is_large,
        )
    hash_index = np.repeat(np.arange(n_queries, dtype=np.int32), counts)
    track = np.empty(total, np.int64)
    offset = np.empty(total, np.int32)
    locate_tracks(values, snapshot.bases, snapshot.block_first, FRAME_BLOCK_BITS, track, offset)
    track_id = snapshot.track_ids[track]
    if snapshot.has_tombstones:
        alive = snapshot.live[track]
        if not alive.all():
            return Postings(hash_index[alive], track_id[alive], offset[alive])
    return Postings(hash_index, track_id, offset)


def _track_record(row: tuple) -> TrackRecord:
    return TrackRecord(
        track_id=row[0],
        file_sha1=row[1],
        title=row[2],
        artist=row[3],
        album=row[4],
        year=row[5],
        duration_s=row[6],
        n_hashes=row[7],
        created_at=row[8],
    )


def _select_live_by_sha1(conn: sqlite3.Connection, file_sha1: str) -> TrackRecord | None:
    row = conn.execute(_SELECT_TRACK + " WHERE file_sha1 = ? AND deleted = 0", (file_sha1,)).fetchone()
    return None if row is None else _track_record(row)


def _insert_track(
    txn: sqlite3.Connection, meta: TrackMeta, n_hashes: int, base_frame: int, n_frames: int, created_at: float
) -> int:
    cursor = txn.execute(
        "INSERT INTO tracks (file_sha1, title, artist, album, year, duration_s, n_hashes, base_frame, "
        "n_frames, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            meta.file_sha1,
            meta.title,
            meta.artist,
            meta.album,
            meta.year,
            float(meta.duration_s),
            n_hashes,
            base_frame,
            n_frames,
            created_at,
        ),
    )
    track_id = cursor.lastrowid
    assert track_id is not None
    return track_id


def _insert_level0(txn: sqlite3.Connection, track_id: int, n_rows: int, blob: bytes) -> int:
    cursor = txn.execute(
        "INSERT INTO level0_segments (track_id, n_rows, data) VALUES (?, ?, ?)", (track_id, n_rows, blob)
    )
    segment_id = cursor.lastrowid
    assert segment_id is not None
    return segment_id


class _Mentioning(logging.Filter):
    """Drops the log records whose message contains `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self._text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self._text not in record.getMessage()


def warm_up(fingerprint_version: int) -> None:
    """Run every kernel of the store once, on a throwaway shard in a temporary directory. On a fresh
    install numba compiles them here (and keeps them on disk), not during the first uploads, merges and
    lookups of a real shard: ingest through REST ran at 0.70x the speed of decoding alone on a fresh
    install, 0.80x once compiled. About 0.5 s when they are already compiled, 7-10 s when not. The
    throwaway shard's own log lines (created, merged, deleted a track) are left out: one line says it ran."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tunescout-warm-up-") as tmp:
        quiet = _Mentioning(tmp)
        logger.addFilter(quiet)
        try:
            _exercise(tmp, fingerprint_version)
        finally:
            logger.removeFilter(quiet)
    logger.info("store kernels ready (%.1f s)", time.perf_counter() - started)


def _exercise(tmp: str, fingerprint_version: int) -> None:
    """Every kernel of the store, on a throwaway shard in `tmp` (see `warm_up`)."""
    rng = np.random.default_rng(0)
    # tiny level-0 limits: every ingest merges, so the in-memory and file merges run too
    with EmbeddedShard(
        tmp,
        fingerprint_version=fingerprint_version,
        level0_max_rows=1,
        level0_run_tracks=2,
        tier_fanout=2,
        lookup_threads=2,
        prefetch=False,
    ) as shard:
        hashes = rng.integers(0, 1 << 32, (3, 3 * LOOKUP_SPLIT_MIN), dtype=np.uint64).astype(np.uint32)
        offsets = rng.integers(0, 2000, hashes.shape, dtype=np.int64).astype(np.int32)
        ids = [
            shard.ingest(TrackMeta(file_sha1=f"{i:040x}", title="warm-up"), h, o).track.track_id
            for i, (h, o) in enumerate(zip(hashes, offsets, strict=True))
        ]
        shard.delete_track(ids[0])  # tombstones: lookups count live postings, merges drop the dead
        queries = np.unique(hashes)  # more than LOOKUP_SPLIT_MIN: the split lookup runs as well
        for cap in (0, 1):
            shard.lookup(queries, cap)
        shard.compact(full=True)
        shard.lookup(queries, 1)
        shard.track_postings(ids[1:])
