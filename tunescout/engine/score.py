"""Stage 7: stored postings of a query's hashes -> ranked tracks with offsets and a calibrated confidence.

A clip of track T starting at frame d of T reproduces many of T's landmarks with stored offset = query
offset + d, so its matches pile up in one bin of the offset-difference histogram; matches with unrelated
tracks scatter. Scoring finds, per track, the offset window (+-`offset_tolerance` frames) where the most
distinct query frames agree; the confidence is a calibrated function of that count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tunescout.engine import arrays, hashes, kernels
from tunescout.engine.fingerprint import Fingerprint
from tunescout.engine.params import MatchParams
from tunescout.store.shard import Postings

# looks up unique sorted uint32 hashes; `max_postings_per_hash` drops hashes stored more often than that
Lookup = Callable[[np.ndarray, int], Postings]


@dataclass(frozen=True)
class Candidate:
    """A (track, offset) that the query's matches agree on, under one speed/tempo hypothesis."""

    track_id: int
    offset_frames: int  # where the clip starts inside the track, in the track's frames
    matches: int  # matches consistent with that offset (+- tolerance)
    query_hashes: int  # hashes the query had under this hypothesis
    speed: float
    tempo: float
    distinct_frames: int = 0  # distinct query frames among the matches: repeats of one sound count once
    nearby_frames: int = 0  # distinct query frames matching within +-drift_frames of the offset
    jittered: bool = False  # found by the frame-jitter lookup: calibrated with its own midpoint


@dataclass(frozen=True)
class HashIndex:
    """A query fingerprint's hashes grouped: the rows holding `unique[i]` are
    `order[starts[i] : starts[i] + counts[i]]`."""

    unique: np.ndarray  # uint32, sorted distinct hashes: what is looked up
    order: np.ndarray  # int32, the fingerprint's rows sorted by hash (equal hashes in row order)
    starts: np.ndarray  # int64
    counts: np.ndarray  # int64


def index_hashes(hashes: np.ndarray) -> HashIndex:
    """One radix sort gives the distinct hashes and where each occurs (it replaced a sort for the
    distinct hashes, a binary search of every row and a stable argsort: 2 ms per hypothesis)."""
    ordered, order = kernels.sort_pairs(hashes.astype(np.int64), np.arange(hashes.size, dtype=np.int32))
    starts = arrays.first_of_runs(ordered)
    counts = np.diff(np.append(starts, ordered.size))
    return HashIndex(ordered[starts].astype(np.uint32), order, starts.astype(np.int64), counts)


def _best_offset_of_track(
    delta: np.ndarray, query_frame: np.ndarray, tol: int, drift: int
) -> tuple[int, int, int, int]:
    """(offset, distinct query frames, matches, distinct query frames within +-drift) of the offset window
    where the most distinct query frames agree, from one track's matches (offset differences and the
    query frames they come from, in any order). Ranking windows by raw matches instead lets a sustained
    sound, which matches many stored frames at once, pull the offset to a lookalike passage elsewhere in
    the track."""
    d = delta
    f = query_frame.astype(np.int64)
    bias = 1 << 30  # offsets and their differences stay far below 2**30 frames (200 days)
    pairs = arrays.unique(((d + bias) << 32) | f)  # each (offset, query frame) once, sorted by offset
    d_u = (pairs >> 32) - bias
    lo = np.searchsorted(d_u, d_u - tol, side="left")
    hi = np.searchsorted(d_u, d_u + tol, side="right")
    best = int(np.argmax(hi - lo))
    in_window = (d >= d_u[best] - tol) & (d <= d_u[best] + tol)
    frames = int(arrays.unique(f[in_window]).size)
    nearby = int(arrays.unique(f[np.abs(d - d_u[best]) <= drift]).size)
    # the mean of the window, so +-1 frame jitter does not bias the offset
    return round(float(d[in_window].mean())), frames, int(in_window.sum()), nearby


# track ids below this (or below 4 per posting) are counted in an array indexed by id; larger ones (global
# ids of many shards) are first numbered densely, so the count never takes more memory than the postings
_DENSE_TRACK_IDS = 1 << 16


def _tracks_with_matches(postings: Postings, query_counts: np.ndarray, least: int) -> Postings:
    """The postings of tracks with at least `least` matches in all (a track's best window holds no more
    than all its matches): chance agreement spreads a few matches over thousands of tracks, and sorting
    only the rest makes scoring cheaper at catalogue scale."""
    track_id = postings.track_id
    if track_id.size == 0:
        return postings
    if int(track_id.min()) >= 0 and int(track_id.max()) < max(_DENSE_TRACK_IDS, 4 * track_id.size):
        return Postings(
            *kernels.postings_of_busy_tracks(
                postings.hash_index, track_id, postings.offset, query_counts, least
            )
        )
    ids, dense = np.unique(track_id, return_inverse=True)
    h, t, o = kernels.postings_of_busy_tracks(
        postings.hash_index, dense, postings.offset, query_counts, least
    )
    return Postings(h, ids[t], o)


def rank_offsets(
    query: Fingerprint,
    index: HashIndex,
    postings: Postings,
    params: MatchParams,
    *,
    speed: float = 1.0,
    tempo: float = 1.0,
    top: int = 10,
    min_window: int = 0,
) -> list[Candidate]:
    """The best (track, offset) bins of one hypothesis, strongest first, one per track. `index` is
    `index_hashes(query.hashes)`; `postings` index its `unique` hashes. Tracks whose best window holds
    fewer than `min_window` matches are left out (see `frames_needed`): describing a candidate costs more
    than finding it, and most are chance agreement that could never be reported."""
    if postings.hash_index.size == 0 or query.hashes.size == 0:
        return []
    query_offsets = query.offsets.astype(np.int32, copy=False)
    if min_window > 1:
        postings = _tracks_with_matches(postings, index.counts, min_window)
        if postings.hash_index.size == 0:
            return []
    # one int64 key per match: track << 32 | (offset difference + bias), sorted, with its query row
    keys, rows = kernels.match_keys(
        postings.hash_index,
        postings.track_id,
        postings.offset,
        index.order,
        index.starts,
        index.counts,
        query_offsets,
    )
    keys, rows = kernels.sort_pairs(keys, rows)
    track_ids, best_window, _, _, _ = kernels.best_window_per_track(keys, params.offset_tolerance)
    chosen = np.argsort(-best_window, kind="stable")[:top]
    chosen = chosen[best_window[chosen] >= min_window]
    out = []
    for i in chosen:
        track = int(track_ids[i])
        # the track's matches; its last possible key stays below 2**63 for every track id < 2**31
        lo = int(np.searchsorted(keys, np.int64(track << 32), side="left"))
        hi = int(np.searchsorted(keys, np.int64((track << 32) | 0xFFFFFFFF), side="right"))
        offset, frames, matches, nearby = _best_offset_of_track(
            (keys[lo:hi] & 0xFFFFFFFF) - kernels.KEY_DELTA_BIAS,
            query_offsets[rows[lo:hi]],
            params.offset_tolerance,
            params.drift_frames,
        )
        out.append(
            Candidate(
                track_id=track,
                offset_frames=offset,
                matches=matches,
                query_hashes=int(query.hashes.size),
                speed=speed,
                tempo=tempo,
                distinct_frames=frames,
                nearby_frames=nearby,
            )
        )
    return out


def postings_cap(params: MatchParams, stored_hashes: int = 0) -> int:
    """The most postings a looked-up hash may have and still count, for a catalogue of `stored_hashes`
    (all shards; 0 = unknown, which gets the floor). See `MatchParams.posting_cap_ratio`."""
    scaled = params.posting_cap_ratio * stored_hashes / float(1 << hashes.HASH_BITS)
    return int(min(params.max_postings_per_hash, max(params.posting_cap_floor, scaled)))


def _midpoint(params: MatchParams, stored_hashes: int, jittered: bool) -> float:
    midpoint = params.jitter_confidence_midpoint if jittered else params.confidence_midpoint
    if stored_hashes > params.calibration_hashes:
        midpoint += params.midpoint_per_doubling * math.log2(stored_hashes / params.calibration_hashes)
    return midpoint


def frames_needed(params: MatchParams, stored_hashes: int = 0, jittered: bool = False) -> int:
    """A lower bound on the distinct frames a candidate needs to reach `min_confidence`: a candidate
    with fewer can never be reported. Its best window's match count bounds its distinct frames from above,
    so `rank_offsets(min_window=...)` may drop it before describing it."""
    p = params.min_confidence
    if not 0.0 < p < 1.0:
        return params.min_matches
    x = _midpoint(params, stored_hashes, jittered) + math.log(p / (1.0 - p)) / params.confidence_slope
    return max(params.min_matches, math.floor(x))


def calibrated_confidence(c: Candidate, params: MatchParams, stored_hashes: int = 0) -> float:
    """Confidence in [0, 1] that `c` is the clip's track, from its time-consistent evidence.

    Evidence is `distinct_frames`: matches in the best offset window, each query frame counted once (a
    repeated sound in the clip is one piece of evidence). Unrelated tracks reach a few such frames by chance;
    the logistic curve is fitted so that 0.5 sits above what clips of unstored tracks reach on the dev
    corpus with every speed/tempo hypothesis tried (bench/engine_bench.py measures its false-positive rate).
    Candidates of the frame-jitter lookup have their own midpoint: nine hashes per triplet find more by
    chance. Both midpoints rise with the catalogue (`stored_hashes`, all shards together; 0 = unknown,
    taken as the size they were fitted at), see `MatchParams.midpoint_per_doubling`.
    """
    if c.distinct_frames < params.min_matches:
        return 0.0
    z = params.confidence_slope * (c.distinct_frames - _midpoint(params, stored_hashes, c.jittered))
    return 1.0 / (1.0 + math.exp(-z))
