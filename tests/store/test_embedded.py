"""EmbeddedShard against a brute-force search of what was ingested, through compactions, deletes,
crashes, reopening and concurrent use."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.store.v1_segments import encode_v1
from tunescout.engine.errors import StoreError, StoreFormatError
from tunescout.store import EmbeddedShard, FingerprintShard, Postings, TrackMeta
from tunescout.store import embedded as embedded_module
from tunescout.store.segments import SEGMENT_FORMAT_VERSION, Segment, format_version_of

FV = 3
REPO_ROOT = Path(__file__).resolve().parents[2]

Fingerprints = tuple[np.ndarray, np.ndarray]  # (hashes uint32, offsets int)


def make_fingerprints(
    rng: np.random.Generator, n: int, hash_space: int = 1 << 12, max_offset: int = 3000
) -> Fingerprints:
    """n fingerprints with repeats (a small hash space) and some exact duplicates, unsorted."""
    hashes = rng.integers(0, hash_space, n).astype(np.uint32)
    offsets = rng.integers(0, max_offset, n).astype(np.int32)
    if n > 10:
        dup = rng.integers(0, n, n // 10)
        hashes = np.concatenate([hashes, hashes[dup]])
        offsets = np.concatenate([offsets, offsets[dup]])
    return hashes, offsets


def sha1_of(i: int) -> str:
    return f"{i:040x}"


def brute_force(stored: dict[int, Fingerprints], queries: np.ndarray, cap: int) -> set[tuple[int, int, int]]:
    """(hash index, track id, offset) of every stored fingerprint matching a query, minus capped hashes."""
    position = {int(h): i for i, h in enumerate(queries)}
    per_hash: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for track_id, (hashes, offsets) in stored.items():
        for h, o in zip(hashes.tolist(), offsets.tolist(), strict=True):
            if h in position:
                per_hash[position[h]].add((track_id, o))
    return {(qi, t, o) for qi, rows in per_hash.items() if not (cap and len(rows) > cap) for t, o in rows}


def as_set(postings: Postings) -> set[tuple[int, int, int]]:
    assert postings.hash_index.dtype == np.int32
    assert postings.track_id.dtype == np.int64
    assert postings.offset.dtype == np.int32
    assert (np.diff(postings.hash_index) >= 0).all(), "postings are grouped by ascending hash index"
    rows = set(
        zip(postings.hash_index.tolist(), postings.track_id.tolist(), postings.offset.tolist(), strict=True)
    )
    assert len(rows) == len(postings), "no posting is returned twice"
    return rows


def queries_for(rng: np.random.Generator, stored: dict[int, Fingerprints]) -> np.ndarray:
    known = np.concatenate([h for h, _ in stored.values()]) if stored else np.empty(0, np.uint32)
    picked = rng.choice(known, min(400, known.shape[0])) if known.shape[0] else known
    unknown = rng.integers(0, 1 << 32, 200, dtype=np.uint64).astype(np.uint32)
    return np.unique(np.concatenate([picked, unknown]).astype(np.uint32))


def assert_matches(shard: EmbeddedShard, stored: dict[int, Fingerprints], rng: np.random.Generator) -> None:
    queries = queries_for(rng, stored)
    for cap in (0, 3, 20):
        assert as_set(shard.lookup(queries, max_postings_per_hash=cap)) == brute_force(
            stored, queries, cap
        ), cap


def open_shard(path: Path, **kwargs: int) -> EmbeddedShard:
    return EmbeddedShard(path, fingerprint_version=FV, **kwargs)


def segment_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("seg-"))


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


# -- correctness ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tunables",
    [
        {"level0_max_tracks": 4, "tier_fanout": 2},  # many files, several tiers
        {"level0_max_tracks": 10, "level0_run_tracks": 3, "tier_fanout": 2},  # in-memory level-0 runs too
    ],
)
def test_lookup_matches_brute_force_through_compactions_deletes_and_reopen(
    tmp_path: Path, tunables: dict[str, int]
) -> None:
    rng = np.random.default_rng(0)
    stored: dict[int, Fingerprints] = {}
    shard = open_shard(tmp_path / "s", **tunables)
    saw_run = False
    assert isinstance(shard, FingerprintShard)
    for i in range(40):
        hashes, offsets = make_fingerprints(rng, int(rng.integers(0, 2500)))
        outcome = shard.ingest(TrackMeta(sha1_of(i), f"track {i}"), hashes, offsets)
        assert not outcome.already_present
        stored[outcome.track.track_id] = (hashes, offsets)
        assert outcome.track.n_hashes == len(set(zip(hashes.tolist(), offsets.tolist(), strict=True)))
        summary = shard.segment_summary()
        saw_run |= summary.level0_tracks > summary.level0_segments
        if i % 9 == 0:
            assert_matches(shard, stored, rng)
    assert saw_run == ("level0_run_tracks" in tunables)
    summary = shard.segment_summary()
    assert summary.file_rows, "40 tracks with level0_max_tracks=4 must have produced segment files"
    assert_matches(shard, stored, rng)

    for track_id in rng.choice(sorted(stored), 6, replace=False).tolist():
        assert shard.delete_track(track_id)
        del stored[track_id]
        assert_matches(shard, stored, rng)  # hidden at once, caps count live postings only
    for i in range(40, 46):  # ingest after deletes: merges now drop dead postings
        hashes, offsets = make_fingerprints(rng, 1500)
        stored[shard.ingest(TrackMeta(sha1_of(i), "late"), hashes, offsets).track.track_id] = (
            hashes,
            offsets,
        )
    assert_matches(shard, stored, rng)

    shard.compact(full=True)
    summary = shard.segment_summary()
    assert len(summary.file_rows) == 1 and summary.level0_segments == 0
    assert sum(summary.file_rows) == shard.stats().n_hashes, "deleted postings are physically gone"
    assert_matches(shard, stored, rng)
    shard.close()
    with sqlite3.connect(tmp_path / "s" / "shard.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM level0_segments").fetchone() == (0,)
    conn.close()

    with open_shard(tmp_path / "s") as reopened:
        assert_matches(reopened, stored, rng)
        assert reopened.stats().n_tracks == len(stored)


def test_a_lookup_split_across_threads_answers_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    monkeypatch.setattr(embedded_module, "LOOKUP_SPLIT_MIN", 64)
    pieces: list[int] = []
    whole_lookup = embedded_module._lookup

    def counted(snapshot: object, queries: np.ndarray, cap: int) -> Postings:
        pieces.append(queries.shape[0])
        return whole_lookup(snapshot, queries, cap)  # type: ignore[arg-type]

    monkeypatch.setattr(embedded_module, "_lookup", counted)
    stored: dict[int, Fingerprints] = {}
    with open_shard(tmp_path / "s", level0_max_tracks=4, tier_fanout=2, lookup_threads=3) as shard:
        for i in range(20):
            hashes, offsets = make_fingerprints(rng, 1500)
            stored[shard.ingest(TrackMeta(sha1_of(i), "t"), hashes, offsets).track.track_id] = (
                hashes,
                offsets,
            )
        for track_id in sorted(stored)[:3]:  # tombstones: the capped recount runs inside each piece
            assert shard.delete_track(track_id)
            del stored[track_id]
        assert_matches(shard, stored, rng)
    assert pieces and max(pieces) < 600 / 2, "lookups of ~600 hashes were split into 3 pieces"
    assert len(pieces) == 3 * 3, "three caps, each lookup in three pieces"


def test_a_split_lookup_racing_close_says_the_shard_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded_module, "LOOKUP_SPLIT_MIN", 64)
    rng = np.random.default_rng(9)
    shard = open_shard(tmp_path / "s", lookup_threads=2)
    shard.ingest(TrackMeta(sha1_of(0), "t"), *make_fingerprints(rng, 2000))
    queries = np.unique(rng.integers(0, 1 << 12, 600).astype(np.uint32))
    assert len(shard.lookup(queries)) > 0  # the pool exists now
    handed_out = shard._pool

    def pool_then_close() -> object:
        pool = handed_out()
        shard.close()  # between the lookup's pool and its submits
        return pool

    monkeypatch.setattr(shard, "_pool", pool_then_close)
    with pytest.raises(StoreError, match="closed"):
        shard.lookup(queries)
    with pytest.raises(StoreError, match="closed"):
        handed_out()


def test_opening_asks_the_os_to_read_every_segment_file_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    with open_shard(tmp_path / "s", level0_max_tracks=2, prefetch=False) as shard:
        for i in range(6):
            shard.ingest(TrackMeta(sha1_of(i), "t"), *make_fingerprints(rng, 3000))
        assert shard.prefetcher is None
    files = {name: (tmp_path / "s" / name).stat().st_size for name in segment_files(tmp_path / "s")}
    assert files
    monkeypatch.setattr(embedded_module, "PREFETCH_STEP", 4096)
    advised: dict[str, list[tuple[int, int]]] = defaultdict(list)
    real_fadvise = os.posix_fadvise
    fd_names: dict[int, str] = {}
    real_open = os.open

    def recording_open(path: object, flags: int, *args: object) -> int:
        fd = real_open(path, flags, *args)  # type: ignore[arg-type]
        fd_names[fd] = Path(str(path)).name
        return fd

    def recording_fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_WILLNEED
        advised[fd_names[fd]].append((offset, length))
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(embedded_module.os, "open", recording_open)
    monkeypatch.setattr(embedded_module.os, "posix_fadvise", recording_fadvise)
    with open_shard(tmp_path / "s") as shard:
        assert shard.prefetcher is not None
        shard.prefetcher.join(timeout=30)
        assert not shard.prefetcher.is_alive()
    for name, size in files.items():
        offsets = [o for o, _ in advised[name]]
        assert offsets == list(range(0, size, 4096)), f"{name} is read ahead whole, step by step"


def test_reopened_store_gives_same_lookups_with_level0_and_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    shard = open_shard(tmp_path, level0_max_tracks=5)
    for i in range(13):  # 2 files and 3 level-0 segments
        shard.ingest(TrackMeta(sha1_of(i), "t"), *make_fingerprints(rng, 800))
    shard.delete_track(4)
    unknown = rng.integers(0, 1 << 32, 200, dtype=np.uint64).astype(np.uint32)
    queries = np.unique(np.concatenate([unknown, np.arange(1 << 12, dtype=np.uint32)]))  # every stored hash
    before = [as_set(shard.lookup(queries, cap)) for cap in (0, 4)]
    stats_before = shard.stats()
    shard.close()
    with open_shard(tmp_path, level0_run_tracks=2) as reopened:  # rebuilds level 0 as one in-memory run
        assert reopened.segment_summary().level0_segments == 1
        assert [as_set(reopened.lookup(queries, cap)) for cap in (0, 4)] == before
        assert (reopened.stats().n_tracks, reopened.stats().n_hashes) == (
            stats_before.n_tracks,
            stats_before.n_hashes,
        )


def test_cap_counts_live_postings_only(tmp_path: Path) -> None:
    with open_shard(tmp_path) as shard:
        ids = [
            shard.ingest(
                TrackMeta(sha1_of(i), "t"), np.array([42, 7], np.uint32), np.array([i, 5])
            ).track.track_id
            for i in range(3)
        ]
        queries = np.array([7, 42], np.uint32)
        assert len(shard.lookup(queries, max_postings_per_hash=2)) == 0  # 3 postings each: dropped
        assert len(shard.lookup(queries, max_postings_per_hash=3)) == 6
        shard.delete_track(ids[0])
        assert as_set(shard.lookup(queries, max_postings_per_hash=2)) == {
            (0, ids[1], 5),
            (0, ids[2], 5),
            (1, ids[1], 1),
            (1, ids[2], 2),
        }


def test_metadata_round_trip_and_get_tracks(tmp_path: Path) -> None:
    meta = TrackMeta(sha1_of(1), "Ça plane pour moi", "Plastic Bertrand", "AN1", 1977, 183.5)
    with open_shard(tmp_path) as shard:
        record = shard.ingest(meta, np.array([1, 2, 2], np.uint32), np.array([0, 9, 9])).track
        assert (record.title, record.artist, record.album, record.year, record.duration_s) == (
            "Ça plane pour moi",
            "Plastic Bertrand",
            "AN1",
            1977,
            183.5,
        )
        assert record.n_hashes == 2
        empty = shard.ingest(
            TrackMeta(sha1_of(2), "silence"), np.empty(0, np.uint32), np.empty(0, np.int32)
        ).track
        assert empty.n_hashes == 0 and empty.year is None
        assert shard.find_by_sha1(sha1_of(1)) == record
        assert shard.get_tracks([record.track_id, empty.track_id, 999, record.track_id]) == {
            record.track_id: record,
            empty.track_id: empty,
        }
        assert shard.get_tracks([]) == {}
        stats = shard.stats()
        assert (stats.n_tracks, stats.n_hashes) == (2, 2) and stats.bytes_on_disk > 0
    with open_shard(tmp_path) as shard:
        assert shard.find_by_sha1(sha1_of(1)) == record
        assert shard.find_by_sha1("f" * 40) is None


# -- idempotency and deletes ---------------------------------------------------------------------------


def test_second_ingest_of_same_file_writes_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with open_shard(tmp_path) as shard:
        first = shard.ingest(TrackMeta(sha1_of(1), "a"), *make_fingerprints(rng, 100))
        stats = shard.stats()
        again = shard.ingest(TrackMeta(sha1_of(1), "other title"), *make_fingerprints(rng, 300))
        assert again.already_present and again.track == first.track
        assert shard.stats() == stats


def test_concurrent_ingest_of_one_file_stores_it_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    fingerprints = make_fingerprints(rng, 2000)
    outcomes = []
    barrier = threading.Barrier(8)
    with open_shard(tmp_path) as shard:

        def ingest() -> None:
            barrier.wait()
            outcomes.append(shard.ingest(TrackMeta(sha1_of(9), "same"), *fingerprints))

        threads = [threading.Thread(target=ingest) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(o.already_present for o in outcomes) == [False] + [True] * 7
        assert len({o.track.track_id for o in outcomes}) == 1
        assert shard.stats().n_tracks == 1


def test_delete_hides_at_once_and_full_compaction_removes(tmp_path: Path) -> None:
    with open_shard(tmp_path, level0_max_tracks=2) as shard:
        ids = [
            shard.ingest(
                TrackMeta(sha1_of(i), "t"), np.array([5, 6 + i], np.uint32), np.array([i, i])
            ).track.track_id
            for i in range(3)
        ]
        assert shard.delete_track(ids[1])
        assert not shard.delete_track(ids[1])
        assert not shard.delete_track(12345)
        assert {t for _, t, _ in as_set(shard.lookup(np.array([5, 7], np.uint32)))} == {ids[0], ids[2]}
        assert shard.find_by_sha1(sha1_of(1)) is None
        assert shard.get_tracks(ids).keys() == {ids[0], ids[2]}
        assert shard.stats().n_tracks == 2
        total_rows = sum(shard.segment_summary().file_rows) + shard.segment_summary().level0_rows
        assert total_rows == 6, "postings stay on disk until a merge"

        shard.compact(full=True)
        assert sum(shard.segment_summary().file_rows) == 4
        assert shard.stats().n_hashes == 4
        again = shard.ingest(TrackMeta(sha1_of(1), "back"), np.array([5], np.uint32), np.array([0]))
        assert not again.already_present and again.track.track_id not in ids
        assert len(shard.lookup(np.array([5], np.uint32))) == 3


def test_merges_give_level0_pages_back_to_the_disk(tmp_path: Path) -> None:
    """Level-0 blobs live in SQLite until a merge moves them to a segment file; their pages must then
    leave shard.sqlite (and its WAL), or the database keeps every posting ever ingested a second time."""
    rng = np.random.default_rng(7)
    with open_shard(tmp_path, level0_max_tracks=1000, level0_max_rows=10**9) as shard:
        for i in range(40):
            shard.ingest(TrackMeta(sha1_of(i), "t"), *make_fingerprints(rng, 20_000, hash_space=1 << 30))
        db = tmp_path / embedded_module.SQLITE_NAME
        grown = db.stat().st_size + _wal_size(db)
        shard.compact(full=True)
        assert shard.segment_summary().level0_segments == 0
        shrunk = db.stat().st_size + _wal_size(db)
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert grown > 2_000_000
    assert shrunk < 200_000, f"shard.sqlite and WAL hold {shrunk} bytes after the merge"


def _wal_size(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


# -- crash safety --------------------------------------------------------------------------------------


def test_failed_ingest_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> int:
        raise OSError("disk pulled")

    with open_shard(tmp_path) as shard:
        monkeypatch.setattr(embedded_module, "_insert_level0", fail)
        with pytest.raises(OSError, match="disk pulled"):
            shard.ingest(TrackMeta(sha1_of(1), "t"), np.array([1], np.uint32), np.array([3]))
        assert shard.find_by_sha1(sha1_of(1)) is None
        assert shard.stats().n_tracks == 0
        monkeypatch.undo()
        shard.ingest(TrackMeta(sha1_of(1), "t"), np.array([1], np.uint32), np.array([3]))
        assert as_set(shard.lookup(np.array([1], np.uint32))) == {
            (0, shard.find_by_sha1(sha1_of(1)).track_id, 3)
        }


def test_failed_manifest_swap_keeps_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(4)
    stored: dict[int, Fingerprints] = {}
    shard = open_shard(tmp_path, level0_max_tracks=3)
    for i in range(2):
        fingerprints = make_fingerprints(rng, 500)
        stored[shard.ingest(TrackMeta(sha1_of(i), "t"), *fingerprints).track.track_id] = fingerprints

    def crash_after_fsync(self: EmbeddedShard, prepared: object, new_file: object) -> None:
        raise OSError("power cut before the manifest commit")

    monkeypatch.setattr(EmbeddedShard, "_swap_manifest", crash_after_fsync)
    fingerprints = make_fingerprints(rng, 500)
    with caplog.at_level(logging.ERROR, logger="tunescout.store.embedded"):  # the 3rd ingest triggers a merge
        stored[shard.ingest(TrackMeta(sha1_of(2), "t"), *fingerprints).track.track_id] = fingerprints
    assert "merge failed" in caplog.text
    assert shard.segment_summary().level0_segments == 3 and segment_files(tmp_path) == []
    assert_matches(shard, stored, rng)
    with pytest.raises(OSError, match="power cut"):
        shard.compact()
    monkeypatch.undo()
    shard.compact()
    assert shard.segment_summary().level0_segments == 0 and len(segment_files(tmp_path)) == 1
    assert_matches(shard, stored, rng)
    shard.close()


_CRASHING_CHILD = """
import os, sys
import numpy as np
from tunescout.store import EmbeddedShard, TrackMeta
path, tracks, mode = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
shard = EmbeddedShard(path, fingerprint_version=3, level0_max_tracks=2, tier_fanout=2)
swap = EmbeddedShard._swap_manifest
def crash(self, prepared, new_file):
    if mode == "before-swap" or not prepared.files:
        if mode == "before-swap":
            os._exit(17)  # the merged file is written, fsynced and renamed; the manifest does not know it
        return swap(self, prepared, new_file)
    swap(self, prepared, new_file)
    os._exit(18)  # manifest swapped; the merged inputs are still on disk
EmbeddedShard._swap_manifest = crash
n = len([k for k in tracks.files if k.startswith("h")])
for i in range(n):
    shard.ingest(TrackMeta(f"{i:040x}", "t"), tracks[f"h{i}"], tracks[f"o{i}"])
os._exit(0)
"""


@pytest.mark.parametrize(("mode", "exit_code", "n_tracks"), [("before-swap", 17, 2), ("after-swap", 18, 4)])
def test_crash_during_compaction_recovers_on_open(
    tmp_path: Path, mode: str, exit_code: int, n_tracks: int
) -> None:
    rng = np.random.default_rng(5)
    arrays = {}
    for i in range(n_tracks):
        hashes = rng.permutation(1 << 12)[:500].astype(np.uint32)  # 500 distinct postings: equal tiers
        arrays[f"h{i}"], arrays[f"o{i}"] = hashes, rng.integers(0, 3000, 500)
    tracks_file = tmp_path / "tracks.npz"
    np.savez(tracks_file, **arrays)
    shard_path = tmp_path / "shard"
    child = run_python(_CRASHING_CHILD, str(shard_path), str(tracks_file), mode)
    assert child.returncode == exit_code, child.stderr
    left_behind = segment_files(shard_path)
    assert len(left_behind) == (1 if mode == "before-swap" else 3), left_behind

    with open_shard(shard_path) as shard:
        files_after = segment_files(shard_path)
        if mode == "before-swap":
            assert files_after == [], "the orphan file is removed"
            assert shard.segment_summary().level0_segments == 2, "level 0 still holds the tracks"
        else:
            assert files_after == [left_behind[-1]], "the merged inputs are removed, the merged file kept"
            assert shard.segment_summary().file_rows == (2000,)
        stored = {i + 1: (arrays[f"h{i}"], arrays[f"o{i}"]) for i in range(n_tracks)}
        assert shard.stats().n_tracks == n_tracks
        assert_matches(shard, stored, rng)


# -- refusals ------------------------------------------------------------------------------------------


def test_fingerprint_version_mismatch_is_refused(tmp_path: Path) -> None:
    open_shard(tmp_path).close()
    with pytest.raises(StoreFormatError, match=r"fingerprints of version 3; this engine computes version 4"):
        EmbeddedShard(tmp_path, fingerprint_version=4)
    open_shard(tmp_path).close()  # the refused open released the directory lock


def test_a_shard_from_before_stored_peaks_gains_their_table_on_open(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    shard = open_shard(tmp_path)
    old = shard.ingest(TrackMeta("a" * 40, "old"), *make_fingerprints(rng, 500)).track.track_id
    shard.close()
    with sqlite3.connect(tmp_path / "shard.sqlite") as conn:  # as a release before the table wrote it
        conn.execute("DROP TABLE track_peaks")
    conn.close()
    shard = open_shard(tmp_path)
    try:
        new = shard.ingest(TrackMeta("b" * 40, "new"), *make_fingerprints(rng, 500), b"blob").track.track_id
        assert shard.track_peaks([old, new]) == {new: b"blob"}  # the old track has none, and is still there
        assert set(shard.get_tracks([old, new])) == {old, new}
    finally:
        shard.close()


def test_unknown_store_format_is_refused(tmp_path: Path) -> None:
    open_shard(tmp_path).close()
    with sqlite3.connect(tmp_path / "shard.sqlite") as conn:
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    conn.close()
    with pytest.raises(StoreFormatError, match=r"store format version 2; this tunescout supports version 1"):
        open_shard(tmp_path)


def test_second_process_is_refused(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from tunescout.engine.errors import StoreError\n"
        "from tunescout.store import EmbeddedShard\n"
        "try:\n"
        "    EmbeddedShard(sys.argv[1], fingerprint_version=3)\n"
        "except StoreError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    with open_shard(tmp_path):
        child = run_python(code, str(tmp_path))
        assert child.returncode == 3, child.stderr
        assert f"already open (lock held by process {os.getpid()})" in child.stdout
        with pytest.raises(StoreError, match="already open"):
            open_shard(tmp_path)  # a second object in the same process too
    assert run_python(code, str(tmp_path)).returncode == 0  # free again once closed


def test_full_frame_space_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_module, "FRAME_SPACE", 10_000)
    with open_shard(tmp_path) as shard:
        shard.ingest(TrackMeta(sha1_of(1), "t"), np.array([1], np.uint32), np.array([6000]))
        with pytest.raises(StoreError, match=r"is full.*Add a shard"):
            shard.ingest(TrackMeta(sha1_of(2), "t"), np.array([1], np.uint32), np.array([6000]))
        assert shard.stats().n_tracks == 1


def test_malformed_input_is_refused(tmp_path: Path) -> None:
    with open_shard(tmp_path) as shard:
        meta = TrackMeta(sha1_of(1), "t")
        with pytest.raises(ValueError, match="parallel"):
            shard.ingest(meta, np.array([1, 2], np.uint32), np.array([1]))
        with pytest.raises(ValueError, match="offsets must lie"):
            shard.ingest(meta, np.array([1], np.uint32), np.array([-1]))
        with pytest.raises(ValueError, match="uint32"):
            shard.ingest(meta, np.array([1 << 33]), np.array([1]))
        with pytest.raises(ValueError, match="file_sha1"):
            shard.ingest(TrackMeta("", "t"), np.array([1], np.uint32), np.array([1]))
        with pytest.raises(ValueError, match="sorted ascending and unique"):
            shard.lookup(np.array([5, 3], np.uint32))
        with pytest.raises(ValueError, match="max_postings_per_hash"):
            shard.lookup(np.array([5], np.uint32), -1)
        assert len(shard.lookup(np.empty(0, np.uint32))) == 0
    with pytest.raises(StoreError, match="closed"):
        shard.lookup(np.array([5], np.uint32))


# -- concurrency ---------------------------------------------------------------------------------------


def test_readers_see_whole_tracks_during_ingest_and_compaction(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    n_tracks = 60
    tracks = [make_fingerprints(rng, 400, hash_space=1 << 10) for _ in range(n_tracks)]
    queries = np.arange(0, 1 << 10, 3, dtype=np.uint32)
    expected = [brute_force({i + 1: tracks[i]}, queries, 0) for i in range(n_tracks)]  # ids are 1..n
    up_to = [set().union(*expected[:k]) for k in range(n_tracks + 1)]  # postings of tracks 1..k
    errors: list[str] = []
    done = threading.Event()

    with open_shard(tmp_path, level0_max_tracks=7, level0_run_tracks=2, tier_fanout=2) as shard:

        def read() -> None:
            while not done.is_set():
                seen = as_set(shard.lookup(queries))
                newest = max((t for _, t, _ in seen), default=0)
                if seen != up_to[newest]:
                    errors.append(f"snapshot up to track {newest} is not whole")

        readers = [threading.Thread(target=read) for _ in range(2)]
        for reader in readers:
            reader.start()
        try:
            ids = [
                shard.ingest(TrackMeta(sha1_of(i), "t"), *tracks[i]).track.track_id for i in range(n_tracks)
            ]
        finally:
            done.set()
            for reader in readers:
                reader.join()
        assert ids == list(range(1, n_tracks + 1))
        assert not errors, errors[:3]
        assert as_set(shard.lookup(queries)) == up_to[n_tracks]


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    (tmp_path / "shard.sqlite").write_bytes(b"not a database, just text" * 100)
    with pytest.raises(StoreError, match="cannot open shard"):
        open_shard(tmp_path)
    (tmp_path / "shard.sqlite").unlink()
    open_shard(tmp_path).close()  # the lock was released


def test_a_shard_written_in_segment_format_1_is_upgraded_on_open(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    shard = open_shard(tmp_path, level0_max_tracks=5)
    for i in range(13):  # 2 files and 3 level-0 segments
        shard.ingest(TrackMeta(sha1_of(i), "t"), *make_fingerprints(rng, 800))
    queries = np.unique(
        np.concatenate(
            [
                rng.integers(0, 1 << 32, 200, dtype=np.uint64).astype(np.uint32),
                np.arange(1 << 12, dtype=np.uint32),
            ]
        )
    )
    before = as_set(shard.lookup(queries, 0))
    shard.close()

    def as_v1(segment: Segment) -> bytes:
        return encode_v1(segment.hashes(), segment.values(), FV, segment.layout.hash_bits)

    files = [tmp_path / name for name in segment_files(tmp_path)]
    assert files
    for path in files:
        path.write_bytes(as_v1(Segment.open_file(path)))
    db = sqlite3.connect(tmp_path / embedded_module.SQLITE_NAME)
    with db:
        rows = db.execute("SELECT segment_id, data FROM level0_segments").fetchall()
        assert rows
        for segment_id, data in rows:
            v1 = as_v1(Segment.from_bytes(data, source="x"))
            db.execute("UPDATE level0_segments SET data = ? WHERE segment_id = ?", (v1, segment_id))
    db.close()

    # what a crash in the middle of an earlier upgrade leaves: removed on open, like a merge's leftovers
    (tmp_path / "seg-9999999999.tsseg.upgrade.tmp").write_bytes(b"partial")
    with open_shard(tmp_path, level0_max_tracks=5) as reopened:
        assert as_set(reopened.lookup(queries, 0)) == before
    assert segment_files(tmp_path) == [p.name for p in files], "rewritten in place, no file left behind"
    for path in files:
        assert format_version_of(path.read_bytes()) == SEGMENT_FORMAT_VERSION
    db = sqlite3.connect(tmp_path / embedded_module.SQLITE_NAME)
    blobs = [data for (data,) in db.execute("SELECT data FROM level0_segments")]
    db.close()
    assert all(format_version_of(data) == SEGMENT_FORMAT_VERSION for data in blobs)


def test_warm_up_leaves_no_shard_behind_and_logs_one_line(tmp_path, monkeypatch, caplog) -> None:
    # the throwaway shard lives in the temporary directory: nothing of it stays, and operators read one
    # line about it, not its creation, merges and "deleted track 1"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with caplog.at_level(logging.DEBUG, logger="tunescout.store.embedded"):
        embedded_module.warm_up(FV)
    assert list(tmp_path.iterdir()) == []
    messages = [r.getMessage() for r in caplog.records if r.name == "tunescout.store.embedded"]
    assert len(messages) == 1 and messages[0].startswith("store kernels ready"), messages
    assert not embedded_module.logger.filters  # the filter that silenced the throwaway shard is gone
