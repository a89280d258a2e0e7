"""Recognise a query: hash its peaks, look the hashes up, score, and try speed/tempo hypotheses if needed.

Matching runs in stages and stops at the first confident answer whose matches sit in their offset window
(matches drifting around it mean the clip's tempo differs). Each stage looks up, in one batched call (one
round trip per shard), only the hashes no earlier stage looked up (`_Fetched`):
1. the plain hypothesis with each anchor's few strongest targets: most clean or mildly degraded clips end
   here, after a fifth of the full lookup;
2. the plain hypothesis with every target, and each speed (pitch and tempo together) and tempo (pitch kept)
   hypothesis with a few targets: cheap evidence of which hypothesis holds;
3. the hypothesis with the most of that evidence, with many targets;
4. a clip still without a confident answer: its plain triplets with every target moved by a frame
   (`MatchParams.jitter_frames`), which finds phone recordings whose reverb moved their peaks.
Every stage's candidates are kept and ranked together; a track is reported at its best one.
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
    HashIndex,
    Lookup,
    Windows,
    calibrated_confidence,
    describe,
    frames_needed,
    index_hashes,
    offset_windows,
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

    def gather(self, picked: np.ndarray) -> Postings:
        """The postings of union[picked[i]] for each i in turn, with i as their hash index. Costs the rows
        it returns, not all of the union's (12 hypotheses each scanning every row cost 28 ms per query at
        10,000 tracks)."""
        return Postings(
            *kernels.gather_groups(
                self.starts, self.counts, picked, self.postings.track_id, self.postings.offset
            )
        )


class _Fetched:
    """The postings of every hash a query has looked up so far: each stage looks up only hashes no earlier
    stage did (in one call: one round trip per shard), and gets the postings of any of them back."""

    def __init__(self, lookup: Lookup, cap: int) -> None:
        self._lookup = lookup
        self._cap = cap
        self._batches: list[_Groups] = []
        self._known = np.empty(0, np.uint32)  # sorted: every hash looked up so far

    def postings(self, *uniques: np.ndarray) -> list[Postings]:
        """The postings of each sorted array of distinct hashes, indexed into it."""
        wanted = arrays.unique(np.concatenate(uniques)) if len(uniques) > 1 else uniques[0]
        new = wanted[kernels.positions_in(self._known, wanted) < 0]
        if new.size:
            self._batches.append(_Groups(new, self._lookup(new, self._cap)))
            self._known = arrays.unique(np.concatenate((self._known, new)))
        return [self._split(u) for u in uniques]

    def _split(self, own: np.ndarray) -> Postings:
        """Rows come batch by batch, each batch grouped by hash: scoring needs no order."""
        if not self._batches:
            return Postings.empty()
        parts = []
        for batch in self._batches:
            at = kernels.positions_in(batch.union, own)
            rows = np.flatnonzero(at >= 0)
            part = batch.gather(at[rows])
            parts.append(
                part
                if rows.size == own.size
                else Postings(rows[part.hash_index].astype(np.int32), part.track_id, part.offset)
            )
        if len(parts) == 1:
            return parts[0]
        return Postings(
            np.concatenate([p.hash_index for p in parts]),
            np.concatenate([p.track_id for p in parts]),
            np.concatenate([p.offset for p in parts]),
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
    mp = match_params
    narrow = _Narrower(peaks, params, query_pairs(peaks, params))
    fetched = _Fetched(lookup, postings_cap(mp, stored_hashes))
    needed = frames_needed(mp, stored_hashes)
    top = mp.max_results + 2

    def confident(results: list[TrackMatch], concentration: float) -> bool:
        # matches spread around the offset (rather than piled in its window) mean the clip's tempo
        # differs: the plain answer may name the right track, but its offset drifts
        return (
            bool(results)
            and results[0].confidence >= mp.early_exit_confidence
            and concentration >= mp.early_exit_concentration
        )

    # 1. the plain hypothesis with each anchor's strongest targets: enough for a clean or mildly degraded clip
    first = _Hypothesis.hash(peaks, narrow, mp.first_fan_out, 1.0, 1.0)
    (found,) = fetched.postings(first.index.unique)
    candidates = first.rank(found, mp, top, needed)
    results, concentration = _rank(candidates, track_sizes, params, mp, stored_hashes)
    if confident(results, concentration):
        return results
    # 2. the plain hypothesis with every target, and each speed/tempo hypothesis with a few (one lookup)
    plain = _Hypothesis.hash(peaks, narrow, params.query_fan_out, 1.0, 1.0)
    coarse = [_Hypothesis.hash(peaks, narrow, mp.coarse_fan_out, s, r) for s, r in _hypotheses(mp)]
    found = fetched.postings(plain.index.unique, *(h.index.unique for h in coarse))
    candidates += plain.rank(found[0], mp, top, needed)
    evidence: list[tuple[int, int]] = []  # (best distinct frames, hypothesis) to pick the ones to refine
    for i, (hyp, postings) in enumerate(zip(coarse, found[1:], strict=True)):
        windows = offset_windows(hyp.print, hyp.index, postings, mp, min(needed, mp.coarse_min_window))
        evidence.append((windows.strongest, i))
        candidates += hyp.describe(windows, mp, top, needed)
    results, concentration = _rank(candidates, track_sizes, params, mp, stored_hashes)
    if confident(results, concentration):
        return results
    # 3. the hypotheses with the most coarse evidence, with every `hypothesis_fan_out` target
    best = sorted(evidence, key=lambda e: -e[0])[: mp.hypotheses_refined]
    refined = [
        _Hypothesis.hash(peaks, narrow, mp.hypothesis_fan_out, coarse[i].speed, coarse[i].tempo)
        for frames, i in best
        if frames > 0
    ]
    if refined:
        found = fetched.postings(*(h.index.unique for h in refined))
        for hyp, postings in zip(refined, found, strict=True):
            candidates += hyp.rank(postings, mp, top, needed)
        results = _rank(candidates, track_sizes, params, mp, stored_hashes)[0]
    # 4. last try: the plain triplets with their targets moved by a frame
    if mp.jitter_frames and not (results and results[0].confidence >= mp.early_exit_confidence):
        needed = frames_needed(mp, stored_hashes, jittered=True)
        candidates += _jitter_candidates(peaks, plain.print, narrow, fetched, mp, needed)
        results = _rank(candidates, track_sizes, params, mp, stored_hashes)[0]
    return results


@dataclass(frozen=True)
class _Hypothesis:
    """A query's hashes under one speed/tempo hypothesis, from its landmarks at one fan-out."""

    print: Fingerprint
    index: HashIndex
    speed: float
    tempo: float

    @classmethod
    def hash(cls, peaks: Peaks, narrow: _Narrower, fan_out: int, speed: float, tempo: float) -> _Hypothesis:
        params, landmarks = narrow.landmarks(fan_out)
        fp = hashes_from_peaks(peaks, params, Role.QUERY, speed=speed, tempo=tempo, landmarks=landmarks)
        return cls(fp, index_hashes(fp.hashes), speed, tempo)

    def describe(self, windows: Windows, mp: MatchParams, top: int, min_window: int) -> list[Candidate]:
        return describe(
            windows, self.print, mp, speed=self.speed, tempo=self.tempo, top=top, min_window=min_window
        )

    def rank(self, postings: Postings, mp: MatchParams, top: int, min_window: int) -> list[Candidate]:
        return rank_offsets(
            self.print, self.index, postings, mp,
            speed=self.speed, tempo=self.tempo, top=top, min_window=min_window,
        )  # fmt: skip


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
    fetched: _Fetched,
    match_params: MatchParams,
    min_window: int,
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
    (postings,) = fetched.postings(index.unique)
    found = rank_offsets(
        fp, index, postings, match_params, top=match_params.max_results + 2, min_window=min_window
    )
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
