"""Where fingerprints and recognition results are kept.

`shard.FingerprintShard` is the backend-neutral interface of one fingerprint shard; `EmbeddedShard` keeps
one in a local directory (no server), `EmbeddedResultStore` keeps results in a local SQLite file.
"""

from tunescout.store.embedded import EmbeddedShard, SegmentSummary
from tunescout.store.results import EmbeddedResultStore
from tunescout.store.shard import (
    FingerprintShard,
    IngestOutcome,
    Postings,
    ShardStats,
    TrackMeta,
    TrackRecord,
)

__all__ = [
    "EmbeddedResultStore",
    "EmbeddedShard",
    "FingerprintShard",
    "IngestOutcome",
    "Postings",
    "SegmentSummary",
    "ShardStats",
    "TrackMeta",
    "TrackRecord",
]
