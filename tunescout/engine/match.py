"""Recognise a query: hash its peaks, look the hashes up, score, and try speed/tempo hypotheses if needed.

The plain hypothesis runs first; most clips end there. Only when it finds nothing confident (or its
matches drift around the offset, as a tempo change makes them) are the speed (pitch and tempo together)
and tempo (pitch kept) hypotheses hashed, looked up in ONE batched lookup (one round trip per shard,
whatever the number of hypotheses) and scored; the plain run's candidates are kept, not scored again.
A clip still without a confident answer gets one last lookup: its plain triplets with every target moved
by a frame (`MatchParams.jitter_frames`), which finds phone recordings whose reverb moved their peaks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from tunescout.engine import arrays, hashes, kernels
from tunescout.engine.fingerprint import Fingerprint, hashes_from_peaks, query_pairs
from tunescout.engine.pairs import Triplets, narrowed, triplets_of
from tunescout.engine.params import DEFAULT_MATCH_PARAMS, DEFAULT_PARAMS, FingerprintParams, MatchParams
from tunescout.engine.peaks import Peaks, Role
from tunescout.engine.score import (
    Candidate,
    Lookup,
    calibrated_confidence,
    frames_needed,
    index_hashes,
    postings_cap,
    rank_offsets,
)
from tunescout.store.shard import FingerprintShard, Postings


@dataclass(frozen=True)
class TrackSize:
    """What scoring needs to know of a stored track."""

    n_hashes: int  # hashes stored for it


# track ids -> their sizes; ids it does not know (deleted meanwhile) are left out
TrackSizes = Callable[[Iterable[int]], Mapping[int, TrackSize]]


@dataclass(frozen=True)
class TrackMatch:
    track_id: int
    offset_frames: int  # where the clip starts in the track, in the track's frames
    offset_s: float  # the same in seconds of the track
    matches: int  # query frames with time-consistent matching hashes (the evidence; see score.py)
    query_hashes: int  # hashes of the query (under the winning hypothesis)
    query_hash_share: float  # matches / query hashes, in [0, 1]
    track_hash_share: float  # matches / the track's stored hashes, in [0, 1]
    confidence: float  # in [0, 1]; see score.calibrated_confidence
    speed: float  # winning hypothesis: 1.0 = as stored
    tempo: float


def shard_track_sizes(shard: FingerprintShard) -> TrackSizes:
    """`TrackSizes` read from one shard's track records."""

    def sizes(track_ids: Iterable[int]) -> dict[int, TrackSize]:
        return {tid: TrackSize(n_hashes=rec.n_hashes) for tid, rec in shard.get_tracks(track_ids).items()}

    return sizes


def _hypotheses(match_params: MatchParams) -> list[tuple[float, float]]:
    return [(s, 1.0) for s in match_params.speed_factors] + [(1.0, r) for r in match_params.tempo_factors]


class _Groups:
    """Where each hash of a sorted `union` has its postings: rows [starts[i], starts[i] + counts[i])."""

    def __init__(self, union: np.ndarray, postings: Postings) -> None:
        self.union = union
        self.postings = postings
        self.counts = np.bincount(postings.hash_index, minlength=union.size)
        self.starts = np.cumsum(self.counts) - self.counts

    def split(self, own: np.ndarray) -> Postings:
        """The postings of `own` (a sorted subset of `union`) re-indexed into `own`. Costs the rows it
        returns, not all of the union's (12 hypotheses each scanning every row cost 28 ms per query at
        10,000 tracks)."""
        picked = np.searchsorted(self.union, own)
        return Postings(
            *kernels.gather_groups(
                self.starts, self.counts, picked, self.postings.track_id, self.postings.offset
            )
        )


def match_peaks(
    peaks: Peaks,
    lookup: Lookup,
    track_sizes: TrackSizes,
    params: FingerprintParams = DEFAULT_PARAMS,
    match_params: MatchParams = DEFAULT_MATCH_PARAMS,
    stored_hashes: int = 0,
) -> list[TrackMatch]:
    """Up to `max_results` tracks, most confident first, each at least `min_confidence`; [] if none is.
    `stored_hashes`: the catalogue's size (all shards), which the confidence is calibrated for; 0 when
    unknown (calibrated as for about 12 hours of audio)."""
    narrow = _Narrower(peaks, params, query_pairs(peaks, params))
    plain = hashes_from_peaks(peaks, params, Role.QUERY, landmarks=narrow.full)
    index = index_hashes(plain.hashes)
    cap = postings_cap(match_params, stored_hashes)
    postings = lookup(index.unique, cap)
    top = match_params.max_results + 2
    needed = frames_needed(match_params, stored_hashes)
    candidates = rank_offsets(plain, index, postings, match_params, top=top, min_window=needed)
    results, concentration = _rank(candidates, track_sizes, params, match_params, stored_hashes)
    # matches spread around the offset (rather than piled in its window) mean the clip's tempo differs:
    # the plain answer may name the right track, but its offset drifts, so the hypotheses still run
    if (
        results
        and results[0].confidence >= match_params.early_exit_confidence
        and concentration >= match_params.early_exit_concentration
    ):
        return results
    hyp = _hypotheses(match_params)
    if hyp:
        hyp_params, hyp_landmarks = narrow.landmarks(match_params.hypothesis_fan_out)
        prints = [
            hashes_from_peaks(peaks, hyp_params, Role.QUERY, speed=s, tempo=r, landmarks=hyp_landmarks)
            for s, r in hyp
        ]
        indexes = [index_hashes(f.hashes) for f in prints]
        union = arrays.unique(np.concatenate([i.unique for i in indexes]))
        groups = _Groups(union, lookup(union, cap))
        for fp, index, (speed, tempo) in zip(prints, indexes, hyp, strict=True):
            candidates += rank_offsets(
                fp, index, groups.split(index.unique), match_params,
                speed=speed, tempo=tempo, top=top, min_window=needed,
            )  # fmt: skip
        results = _rank(candidates, track_sizes, params, match_params, stored_hashes)[0]
    if match_params.jitter_frames and not (
        results and results[0].confidence >= match_params.early_exit_confidence
    ):
        needed = frames_needed(match_params, stored_hashes, jittered=True)
        candidates += _jitter_candidates(peaks, plain, narrow, lookup, match_params, needed, cap)
        results = _rank(candidates, track_sizes, params, match_params, stored_hashes)[0]
    return results


class _Narrower:
    """A query's landmarks with fewer targets per anchor than `query_fan_out`, cut once per fan-out from
    its full pairs (`pairs.narrowed`)."""

    def __init__(self, peaks: Peaks, params: FingerprintParams, pairs: tuple[np.ndarray, np.ndarray]) -> None:
        self._peaks = peaks
        self._params = params
        self._pairs = pairs
        self.full = triplets_of(pairs)  # at `query_fan_out`
        self._formed: dict[int, tuple[FingerprintParams, Triplets]] = {
            params.query_fan_out: (params, self.full)
        }

    def landmarks(self, fan_out: int) -> tuple[FingerprintParams, Triplets]:
        """(params with that fan-out, the landmarks formed with them)."""
        fan_out = min(fan_out, self._params.query_fan_out)
        if fan_out not in self._formed:
            narrower = replace(self._params, query_fan_out=fan_out)
            self._formed[fan_out] = (narrower, triplets_of(narrowed(self._pairs, self._peaks, fan_out)))
        return self._formed[fan_out]


def _jitter_candidates(
    peaks: Peaks,
    plain: Fingerprint,
    narrow: _Narrower,
    lookup: Lookup,
    match_params: MatchParams,
    min_window: int,
    cap: int,
) -> list[Candidate]:
    """Candidates of the query's triplets (`jitter_fan_out` targets per anchor) with each target moved
    +-`jitter_frames` frames."""
    params, landmarks = narrow.landmarks(match_params.jitter_fan_out)
    base = (
        plain
        if landmarks is narrow.full
        else hashes_from_peaks(peaks, params, Role.QUERY, landmarks=landmarks)
    )
    moved, rows = hashes.jitter_frame_deltas(base.hashes, match_params.jitter_frames)
    fp = Fingerprint(hashes=moved, offsets=base.offsets[rows])
    index = index_hashes(fp.hashes)
    found = rank_offsets(
        fp, index, lookup(index.unique, cap), match_params,
        top=match_params.max_results + 2, min_window=min_window,
    )  # fmt: skip
    # the clip has the plain query's hashes; the variants only widen where they may be found
    return [replace(c, query_hashes=plain.hashes.size, jittered=True) for c in found]


def _rank(
    candidates: list[Candidate],
    track_sizes: TrackSizes,
    params: FingerprintParams,
    match_params: MatchParams,
    stored_hashes: int,
) -> tuple[list[TrackMatch], float]:
    """Tracks ranked by confidence (each at its best hypothesis), and how concentrated the best one's
    matches are: the share of the query frames matching near its offset that sit inside its offset window
    (1.0 = no drift)."""
    if not candidates:
        return [], 0.0
    sizes = track_sizes({c.track_id for c in candidates})
    best: dict[int, TrackMatch] = {}
    concentration: dict[int, float] = {}
    for c in candidates:
        size = sizes.get(c.track_id)
        if size is None:
            continue
        conf = calibrated_confidence(c, match_params, stored_hashes)
        held = best.get(c.track_id)
        if held is not None and (held.confidence, held.matches) >= (conf, c.distinct_frames):
            continue
        best[c.track_id] = TrackMatch(
            track_id=c.track_id,
            offset_frames=c.offset_frames,
            offset_s=c.offset_frames * params.frame_seconds,
            matches=c.distinct_frames,
            query_hashes=c.query_hashes,
            query_hash_share=min(1.0, c.matches / max(1, c.query_hashes)),
            track_hash_share=min(1.0, c.matches / max(1, size.n_hashes)),
            confidence=conf,
            speed=c.speed,
            tempo=c.tempo,
        )
        concentration[c.track_id] = c.distinct_frames / max(1, c.nearby_frames)
    ranked = sorted(best.values(), key=lambda m: (-m.confidence, -m.matches))
    results = [m for m in ranked if m.confidence >= match_params.min_confidence][: match_params.max_results]
    return results, (concentration[results[0].track_id] if results else 0.0)
