"""Stage 7: stored postings of a query's hashes -> ranked tracks with offsets and a calibrated confidence.

A clip of track T starting at frame d of T reproduces many of T's landmarks with stored offset = query
offset + d, so its matches pile up in one bin of the offset-difference histogram; matches with unrelated
tracks scatter. Scoring finds, per track, the offset window (+-`offset_tolerance` frames) where the most
distinct query frames agree; the confidence is a calibrated function of that count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    rival_frames: int = 0  # the most distinct frames of a window of this track beyond +-drift_frames
    rival_offset: int = 0  # where that window lies (the clip's start in the track, frames)
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


# postings whose track ids all lie below this (or below 4 per posting), times the hypotheses scored, have
# their bins counted in an array indexed by id; larger ids (global ids of many shards) are first numbered
# densely, so the count never takes much more memory than the postings
_DENSE_TRACK_IDS = 1 << 16


def _track_slots(track_id: np.ndarray, n_groups: int) -> np.ndarray:
    """Dense numbers for the postings' tracks, for `kernels.match_keys` to count bins by: the ids
    themselves where they are small enough."""
    if track_id.size and int(track_id.min()) >= 0:
        if (int(track_id.max()) + 1) * n_groups <= max(_DENSE_TRACK_IDS, 4 * track_id.size):
            return track_id
    return np.unique(track_id, return_inverse=True)[1].reshape(-1)


def rank_offsets(
    query: Fingerprint,
    index: HashIndex,
    postings: Postings,
    params: MatchParams,
    *,
    hypotheses: Sequence[tuple[float, float]] = ((1.0, 1.0),),
    groups: np.ndarray | None = None,
    top: int = 10,
    min_window: int = 0,
) -> list[Candidate]:
    """The best (track, offset) bins of each hypothesis: per hypothesis, up to `top` tracks, strongest
    first; hypotheses in order. `hypotheses` are (speed, tempo) pairs and `groups` (one per query row,
    default all 0) says under which one a row was hashed: a query's hypotheses are scored in one pass.
    `index` is `index_hashes(query.hashes)`; `postings` index its `unique` hashes, in any order. Bins
    whose best window holds fewer than `min_window` matches are left out (see `frames_needed`): describing
    a candidate costs more than finding it, and most are chance agreement that could never be reported."""
    if postings.hash_index.size == 0 or query.hashes.size == 0:
        return []
    n_groups = len(hypotheses)
    if not 1 <= n_groups <= kernels.MAX_GROUPS:
        raise ValueError(f"between 1 and {kernels.MAX_GROUPS} hypotheses are scored at once, got {n_groups}")
    if groups is None:
        groups = np.zeros(query.hashes.size, np.int8)
    query_offsets = query.offsets.astype(np.int32, copy=False)
    # the kernels index arrays with these without bounds checks
    if groups.shape != query.hashes.shape or int(groups.min()) < 0 or int(groups.max()) >= n_groups:
        raise ValueError("groups must give each query row a hypothesis in [0, len(hypotheses))")
    if int(query_offsets.min()) < 0:
        raise ValueError("query offsets must be >= 0")
    # one key per match: its bin (track, hypothesis) and offset difference, sorted, with its query row
    keys, rows = kernels.match_keys(
        postings.hash_index,
        postings.track_id,
        _track_slots(postings.track_id, n_groups),
        postings.offset,
        index.order,
        index.starts,
        index.counts,
        query_offsets,
        groups,
        n_groups,
        max(1, min_window),
    )
    if keys.size == 0:
        return []
    keys, rows = kernels.sort_pairs(keys, rows)
    bins, best_window, _, _, _ = kernels.best_window_per_bin(keys, params.offset_tolerance, kernels.BIN_SHIFT)
    group = bins & (kernels.MAX_GROUPS - 1)
    # per hypothesis, its bins by their best window (ties: the lower track id), the first `top` of them
    order = np.lexsort((-best_window, group))
    first_of_group = np.searchsorted(group[order], group[order], side="left")
    chosen = order[(np.arange(order.size) - first_of_group < top) & (best_window[order] >= min_window)]
    chosen_bins = bins[chosen]
    offset, frames, matches, nearby, rival, rival_offset = kernels.describe_windows(
        keys,
        query_offsets[rows],
        np.searchsorted(keys, chosen_bins << kernels.BIN_SHIFT, side="left"),
        np.searchsorted(keys, (chosen_bins << kernels.BIN_SHIFT) | kernels.DELTA_MASK, side="right"),
        kernels.DELTA_MASK,
        kernels.KEY_DELTA_BIAS,
        params.offset_tolerance,
        params.drift_frames,
    )
    hashes_of_group = np.bincount(groups, minlength=n_groups)
    return [
        Candidate(
            track_id=int(b >> kernels.GROUP_BITS),
            offset_frames=int(offset[i]),
            matches=int(matches[i]),
            query_hashes=int(hashes_of_group[g]),
            speed=hypotheses[g][0],
            tempo=hypotheses[g][1],
            distinct_frames=int(frames[i]),
            nearby_frames=int(nearby[i]),
            rival_frames=int(rival[i]),
            rival_offset=int(rival_offset[i]),
        )
        for i, (b, g) in enumerate(zip(chosen_bins.tolist(), group[chosen].tolist(), strict=True))
    ]


def postings_cap(params: MatchParams, stored_hashes: int = 0) -> int:
    """The most postings a looked-up hash may have and still count, for a catalogue of `stored_hashes`
    (all shards; 0 = unknown, which gets the floor). See `MatchParams.posting_cap_ratio`."""
    scaled = params.posting_cap_ratio * stored_hashes / float(1 << hashes.HASH_BITS)
    return int(min(params.max_postings_per_hash, max(params.posting_cap_floor, scaled)))


def _midpoint(params: MatchParams, stored_hashes: int, jittered: bool, query_hashes: int = 0) -> float:
    midpoint = params.jitter_confidence_midpoint if jittered else params.confidence_midpoint
    if stored_hashes > params.calibration_hashes:
        midpoint += params.midpoint_per_doubling * math.log2(stored_hashes / params.calibration_hashes)
    if query_hashes > params.calibration_query_hashes:
        ratio = query_hashes / params.calibration_query_hashes
        midpoint += params.query_midpoint_per_doubling * math.log2(ratio)
    return midpoint


def frames_needed(params: MatchParams, stored_hashes: int = 0, jittered: bool = False) -> int:
    """A lower bound on the distinct frames a candidate needs to reach `min_confidence`: a candidate
    with fewer can never be reported. Its best window's match count bounds its distinct frames from above,
    so `rank_offsets(min_window=...)` may drop it before describing it. It leaves the query's length out
    (a long query only raises the midpoint), so it holds for every query."""
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
    taken as the size they were fitted at), see `MatchParams.midpoint_per_doubling`, and with the query
    (`query_hashes`: a whole song offers chance far more hashes than a 10 s clip), see
    `MatchParams.query_midpoint_per_doubling`.
    """
    if c.distinct_frames < params.min_matches:
        return 0.0
    midpoint = _midpoint(params, stored_hashes, c.jittered, c.query_hashes)
    z = params.confidence_slope * (c.distinct_frames - midpoint)
    return 1.0 / (1.0 + math.exp(-z))
