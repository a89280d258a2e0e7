"""The interface of one fingerprint shard and its domain types, independent of any backend.

A fingerprint is (hash, offset): a uint32 hash and the frame (spectrogram hop) inside the track where its
anchor peak lies. A shard stores tracks (metadata plus fingerprints) and answers, for a set of query
hashes, where those hashes are stored: (track id, offset). `EmbeddedShard` implements it on local disk;
ClickHouse and MySQL backends implement the same protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TrackMeta:
    """What a caller supplies with a track's fingerprints. `file_sha1` identifies the audio file (hex)."""

    file_sha1: str
    title: str
    artist: str = ""
    album: str = ""
    year: int | None = None
    duration_s: float = 0.0  # seconds


@dataclass(frozen=True)
class TrackRecord:
    """A stored track. `n_hashes` counts its distinct (hash, offset) fingerprints; `created_at` is unix s."""

    track_id: int
    file_sha1: str
    title: str
    artist: str
    album: str
    year: int | None
    duration_s: float
    n_hashes: int
    created_at: float

    @classmethod
    def stored(cls, track_id: int, meta: TrackMeta, n_hashes: int, created_at: float) -> TrackRecord:
        """The record of a track just stored from `meta`."""
        return cls(
            track_id,
            meta.file_sha1,
            meta.title,
            meta.artist,
            meta.album,
            meta.year,
            float(meta.duration_s),
            int(n_hashes),
            created_at,
        )


@dataclass(frozen=True)
class IngestOutcome:
    """The stored track, and whether it was there already (same `file_sha1`: nothing was written)."""

    track: TrackRecord
    already_present: bool


@dataclass(frozen=True, eq=False)
class Postings:
    """Where query hashes are stored: parallel arrays, one row per stored fingerprint that matched.

    `hash_index` (int32) indexes the query's hash array, `track_id` is int64, `offset` (int32) is in frames
    inside that track. Rows are grouped by ascending `hash_index`; order inside a group is unspecified.
    """

    hash_index: np.ndarray
    track_id: np.ndarray
    offset: np.ndarray

    def __len__(self) -> int:
        return int(self.hash_index.shape[0])

    @classmethod
    def empty(cls) -> Postings:
        return cls(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.int32))


@dataclass(frozen=True)
class ShardStats:
    """Live (not deleted) tracks and their fingerprints, and the bytes the shard uses on disk."""

    n_tracks: int
    n_hashes: int
    bytes_on_disk: int


@runtime_checkable
class FingerprintShard(Protocol):
    """One shard of the fingerprint index. Safe for one writer and many readers across threads."""

    def ingest(
        self, meta: TrackMeta, hashes: np.ndarray, offsets: np.ndarray, peaks: bytes = b""
    ) -> IngestOutcome:
        """Store a track and its fingerprints, atomically.

        `hashes` (uint32) and `offsets` (non-negative integer frames) are parallel, unsorted, and may
        repeat a (hash, offset) pair, which is stored once. `peaks` is the track's peak blob
        (`engine.verify.encode`, kept as given; b"" = none). Idempotent by `meta.file_sha1`: a track
        already stored is returned with `already_present=True` and nothing is written.
        """
        ...

    def lookup(self, hashes: np.ndarray, max_postings_per_hash: int = 0) -> Postings:
        """Postings of the query `hashes` (uint32, sorted ascending, unique) in live tracks.

        `max_postings_per_hash` > 0 drops every hash stored more often than that (it carries no
        information); 0 means no cap.
        """
        ...

    def find_by_sha1(self, file_sha1: str) -> TrackRecord | None:
        """The live track stored from that file, if any."""
        ...

    def get_tracks(self, track_ids: Iterable[int]) -> dict[int, TrackRecord]:
        """Live tracks by id; unknown or deleted ids are left out."""
        ...

    def track_peaks(self, track_ids: Iterable[int]) -> dict[int, bytes]:
        """The peak blobs of live tracks stored with one; others are left out. One round trip."""
        ...

    def delete_track(self, track_id: int) -> bool:
        """Delete a track: its postings vanish from lookups at once. False if it is unknown or deleted."""
        ...

    def stats(self) -> ShardStats:
        """Counts without scanning fingerprints."""
        ...

    def list_tracks(self) -> list[TrackRecord]:
        """Every live track, by ascending id (for export)."""
        ...

    def track_postings(self, track_ids: Iterable[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The stored fingerprints of live tracks: id -> (hashes uint32, offsets int32), sorted by (hash,
        offset). A scan: meant for export, not for the request path. Unknown or deleted ids are left out."""
        ...

    def close(self) -> None:
        """Release files, connections and locks. Idempotent."""
        ...
