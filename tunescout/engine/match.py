"""Recognise a query: hash its peaks, look the hashes up, score, and try speed/tempo hypotheses if needed.

The plain hypothesis runs first, over the whole clip; most clips end there. Only when it finds nothing
confident (or its matches drift around the offset, as a tempo change makes them, or another place comes
close to its answer: a repeat of the passage, a remaster of the track) are the speed (pitch and
tempo together) and tempo (pitch kept) hypotheses tried: each hashed from a few triplets per anchor first
(the screen), looked up in ONE batched lookup (one round trip per shard, whatever the number of
hypotheses) and scored in one pass, each hypothesis's bins apart; then the likeliest two hashed in full
(`MatchParams.hypothesis_screen_keep`). The plain run's candidates are kept, not scored again. A clip
still without a confident, uncontested answer gets one last lookup: its plain triplets with every target
moved by a frame (`MatchParams.jitter_frames`), which finds phone recordings whose reverb moved their
peaks. No stage looks up a hash an earlier one did (`_Looked`). A long clip is looked up over its busiest
`MatchParams.long_clip_window_s` first, and the later stages read only that span (`densest_window`).
When the answer's track holds another place almost as strong (a repeat of the passage), the clip's single
peaks settle which place it is (`verify.py`, `MatchParams.settle_rival_share`); a clip left without a
confident answer has its strongest weak candidates checked by single peaks against control places of their
tracks (`MatchParams.rescue_min_frames`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from tunescout.engine import hashes, kernels, verify
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

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackSize:
    """What scoring needs to know of a stored track."""

    n_hashes: int  # hashes stored for it


# track ids -> their sizes; ids it does not know (deleted meanwhile) are left out
TrackSizes = Callable[[Iterable[int]], Mapping[int, TrackSize]]
# track ids -> their stored peaks (`verify.encode`); tracks stored without them are left out
TrackPeaks = Callable[[Iterable[int]], Mapping[int, bytes]]


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


class _Looked:
    """The postings of every hash a query has looked up so far, so that a later stage looks up only the
    hashes it adds: the frame-jitter stage shares about 40 % of its hashes with the plain and hypothesis
    stages. Each lookup's hashes and postings are kept as they came (postings grouped by hash index). A
    shard that failed an earlier stage is not asked again for that stage's hashes (the answer already
    says it was unavailable)."""

    def __init__(self, lookup: Lookup, cap: int) -> None:
        self._lookup = lookup
        self._cap = cap
        self._pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray, Postings]] = []

    def _keep(self, hashes: np.ndarray, postings: Postings) -> None:
        counts = np.bincount(postings.hash_index, minlength=hashes.size)
        self._pieces.append((hashes, np.cumsum(counts) - counts, counts, postings))

    def __call__(self, wanted: np.ndarray) -> Postings:
        """Postings of `wanted` (sorted distinct uint32), indexed into it: looked up for the hashes not
        seen yet, gathered from earlier lookups for the others (a merge pass over each earlier lookup's
        hashes, then only the rows returned). Gathered from several lookups, they are not grouped by hash
        index; scoring does not need them to be."""
        if not self._pieces:
            found = self._lookup(wanted, self._cap)
            self._keep(wanted, found)
            return found
        parts: list[Postings] = []
        fresh = np.ones(wanted.size, bool)
        for union, starts, counts, postings in self._pieces:
            at = kernels.positions_in_sorted(union, wanted)
            where = np.flatnonzero(at >= 0)
            if where.size:
                fresh[where] = False
                h, t, o = kernels.gather_groups(starts, counts, at[where], postings.track_id, postings.offset)
                parts.append(Postings(where[h].astype(np.int32), t, o))
        new = np.flatnonzero(fresh)
        if new.size:
            found = self._lookup(wanted[new], self._cap)
            self._keep(wanted[new], found)
            parts.append(Postings(new[found.hash_index].astype(np.int32), found.track_id, found.offset))
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return Postings.empty()
        return Postings(
            hash_index=np.concatenate([p.hash_index for p in parts]),
            track_id=np.concatenate([p.track_id for p in parts]),
            offset=np.concatenate([p.offset for p in parts]),
        )


def match_peaks(
    peaks: Peaks,
    lookup: Lookup,
    track_sizes: TrackSizes,
    params: FingerprintParams = DEFAULT_PARAMS,
    match_params: MatchParams = DEFAULT_MATCH_PARAMS,
    stored_hashes: int = 0,
    track_peaks: TrackPeaks | None = None,
) -> list[TrackMatch]:
    """Up to `max_results` tracks, most confident first, each at least `min_confidence`; [] if none is.
    `stored_hashes`: the catalogue's size (all shards), which the confidence is calibrated for; 0 when
    unknown (calibrated as for about 12 hours of audio). `track_peaks` (None: not available) settles a
    contested offset and checks weak candidates of a clip left without an answer."""
    clip = peaks
    looked = _Looked(lookup, postings_cap(match_params, stored_hashes))
    top = match_params.max_results + 2
    low = _kept_from(frames_needed(match_params, stored_hashes), match_params)
    candidates: list[Candidate] = []
    # a long clip is first looked up over its busiest span, then (if that finds nothing sure) whole: a
    # whole song uploaded is named from 20 s of it, and a long recording may hold the music anywhere.
    # The later stages read only the span.
    window = densest_window(peaks, params, match_params.long_clip_window_s)
    narrow, plain = _plain_landmarks(window, params)
    for whole in (False, True) if window is not peaks else (False,):
        part_plain = _plain_landmarks(peaks, params)[1] if whole else plain
        index = index_hashes(part_plain.hashes)
        candidates += rank_offsets(
            part_plain, index, looked(index.unique), match_params, top=top, min_window=low
        )
        results, concentration, rival, chosen = _rank(
            candidates, track_sizes, params, match_params, stored_hashes
        )
        # matches spread around the offset (rather than piled in its window) mean the clip's tempo
        # differs: the plain answer may name the right track, but its offset drifts, so the hypotheses run
        if (
            results
            and results[0].confidence >= match_params.early_exit_confidence
            and concentration >= match_params.early_exit_concentration
            and rival <= match_params.early_exit_rival_share
        ):
            return _settled(results, chosen, clip, track_peaks, params, match_params)
    peaks = window
    hyp = _hypotheses(match_params)
    if hyp:
        fan_out = narrow.fan_out_within(
            match_params.hypothesis_fan_out,
            match_params.hypothesis_max_triplets,
            match_params.hypothesis_min_fan_out,
        )
        keep = match_params.hypothesis_screen_keep
        screen_fan_out = narrow.fan_out_within(fan_out, match_params.hypothesis_screen_triplets, 2)
        if 0 < keep < len(hyp) and screen_fan_out < fan_out:
            # the screen: every hypothesis with a few triplets per anchor; the likeliest `keep` go on
            screened = _hypothesis_candidates(
                peaks, narrow, screen_fan_out, hyp, looked, match_params, top=top, min_window=1
            )
            candidates += [c for c in screened if c.distinct_frames >= low]
            hyp = _likeliest(hyp, screened, keep)
        candidates += _hypothesis_candidates(
            peaks, narrow, fan_out, hyp, looked, match_params, top=top, min_window=low
        )
        results, _, rival, chosen = _rank(candidates, track_sizes, params, match_params, stored_hashes)
    if match_params.jitter_frames and not (
        results
        and results[0].confidence >= match_params.early_exit_confidence
        and rival <= match_params.early_exit_rival_share
    ):
        needed = _kept_from(frames_needed(match_params, stored_hashes, jittered=True), match_params)
        candidates += _jitter_candidates(peaks, plain, narrow, looked, match_params, needed)
        results, _, _, chosen = _rank(candidates, track_sizes, params, match_params, stored_hashes)
    if not results and match_params.rescue_min_frames and track_peaks is not None:
        # its place was just checked against the track's others: not settled (nor its peaks read) again
        return _rescued(candidates, clip, track_sizes, track_peaks, params, match_params)
    return _settled(results, chosen, clip, track_peaks, params, match_params)


def _kept_from(needed: int, match_params: MatchParams) -> int:
    """The fewest distinct frames a candidate is kept with: what a reportable one needs (`needed`), or
    fewer when weak candidates are checked by single peaks (`MatchParams.rescue_min_frames`)."""
    return min(needed, match_params.rescue_min_frames) if match_params.rescue_min_frames else needed


def _rescued(
    candidates: list[Candidate],
    clip: Peaks,
    track_sizes: TrackSizes,
    track_peaks: TrackPeaks,
    params: FingerprintParams,
    match_params: MatchParams,
) -> list[TrackMatch]:
    """The weak candidate (below `min_confidence`) whose place the clip's single peaks confirm best, if
    they confirm it enough (`MatchParams.rescue_z_midpoint`); else []."""
    strongest: dict[int, Candidate] = {}
    for c in candidates:
        held = strongest.get(c.track_id)
        if c.distinct_frames >= match_params.rescue_min_frames and (
            held is None or c.distinct_frames > held.distinct_frames
        ):
            strongest[c.track_id] = c
    weak = sorted(strongest.values(), key=lambda c: (-c.distinct_frames, c.track_id))
    weak = weak[: match_params.rescue_candidates]
    blobs = track_peaks([c.track_id for c in weak]) if weak else {}
    best: tuple[float, Candidate] | None = None
    for c in weak:
        z = _peak_z(blobs.get(c.track_id), c, clip, params, match_params)
        if z is not None and (best is None or z > best[0]):
            best = (z, c)
    if best is None:
        return []
    z, c = best
    confidence = 1.0 / (1.0 + math.exp(-match_params.rescue_slope * (z - match_params.rescue_z_midpoint)))
    size = track_sizes([c.track_id]).get(c.track_id)
    if confidence < match_params.min_confidence or size is None:
        return []
    return [_track_match(c, size, confidence, params)]


def _track_match(c: Candidate, size: TrackSize, confidence: float, params: FingerprintParams) -> TrackMatch:
    """The result a candidate makes, with its confidence."""
    return TrackMatch(
        track_id=c.track_id,
        offset_frames=c.offset_frames,
        offset_s=c.offset_frames * params.frame_seconds,
        matches=c.distinct_frames,
        query_hashes=c.query_hashes,
        query_hash_share=min(1.0, c.matches / max(1, c.query_hashes)),
        track_hash_share=min(1.0, c.matches / max(1, size.n_hashes)),
        confidence=confidence,
        speed=c.speed,
        tempo=c.tempo,
    )


def _stored_peaks(track_id: int, blob: bytes | None) -> verify.StoredPeaks | None:
    """A track's stored peaks; None when it has none or they cannot be read (logged: the answer then
    stands on its triplets alone)."""
    if blob is None:
        return None
    try:
        return verify.decode(blob)
    except verify.PeaksFormatError as exc:
        logger.warning("track %d: stored peaks unreadable (%s); not checked by them", track_id, exc)
        return None


def _peak_z(
    blob: bytes | None, c: Candidate, clip: Peaks, params: FingerprintParams, match_params: MatchParams
) -> float | None:
    """How far (in standard deviations) the clip's peaks meeting the track at the candidate's place stand
    above their meeting it at control places spread over the track; None when it cannot be told (no
    stored peaks, an unreadable blob, a track too short for controls)."""
    stored = _stored_peaks(c.track_id, blob)
    if stored is None:
        return None
    t, cells = verify.query_cells(clip, params, c.speed, c.tempo)
    if t.size == 0:
        return None
    last = len(stored.frame_start) - 1 - int(t.max())  # the last place the whole clip fits
    controls = np.linspace(0, max(0, last), match_params.rescue_controls + 2).astype(np.int64)[1:-1]
    controls = controls[np.abs(controls - c.offset_frames) > match_params.drift_frames]
    if controls.size < match_params.rescue_controls // 2:
        return None
    counts = verify.coincidences(
        stored, t, cells, [c.offset_frames, *controls.tolist()], match_params.rescue_reach
    )
    chance = np.asarray(counts[1:], np.float64)
    mean = float(chance.mean())
    spread = max(float(chance.std()), math.sqrt(max(mean, 1.0)))  # at least Poisson's
    z = (counts[0] - mean) / spread
    logger.debug("track %d at %d: %d peaks met, controls %.1f +- %.1f: z %.1f", c.track_id, c.offset_frames,
                 counts[0], mean, spread, z)  # fmt: skip
    return z


def _settled(
    results: list[TrackMatch],
    chosen: Mapping[int, Candidate],
    clip: Peaks,
    track_peaks: TrackPeaks | None,
    params: FingerprintParams,
    match_params: MatchParams,
) -> list[TrackMatch]:
    """`results` with the first one moved to its track's rival place when the clip's single peaks meet
    the stored track's clearly more often there (`MatchParams.settle_rival_share`, `settle_z`). Its
    confidence (that the track is right) stays; `matches` becomes the frames of the place it moved to."""
    if not results or track_peaks is None:
        return results
    top = results[0]
    c = chosen[top.track_id]
    if c.rival_frames < match_params.settle_rival_share * c.distinct_frames:
        return results
    stored = _stored_peaks(top.track_id, track_peaks([top.track_id]).get(top.track_id))
    if stored is None:  # the answer stands on its triplets
        return results
    t, cells = verify.query_cells(clip, params, c.speed, c.tempo)
    here, there = verify.coincidences(
        stored, t, cells, [c.offset_frames, c.rival_offset], match_params.settle_reach
    )
    logger.debug(
        "track %d: clip peaks meeting it at %d: %d, at the rival %d: %d",
        top.track_id, c.offset_frames, here, c.rival_offset, there,
    )  # fmt: skip
    if there - here < match_params.settle_z * math.sqrt(there + here):
        return results
    moved = replace(
        top,
        offset_frames=c.rival_offset,
        offset_s=c.rival_offset * params.frame_seconds,
        matches=c.rival_frames,
    )
    return [moved, *results[1:]]


def _hypothesis_candidates(
    peaks: Peaks,
    narrow: _Narrower,
    fan_out: int,
    hyp: list[tuple[float, float]],
    looked: _Looked,
    match_params: MatchParams,
    *,
    top: int,
    min_window: int,
) -> list[Candidate]:
    """Candidates of the query's landmarks at `fan_out` hashed under each hypothesis: looked up in one
    batch and scored in one pass (each hypothesis's rows grouped by it)."""
    hyp_params, hyp_landmarks = narrow.landmarks(fan_out)
    prints = [
        hashes_from_peaks(peaks, hyp_params, Role.QUERY, speed=s, tempo=r, landmarks=hyp_landmarks)
        for s, r in hyp
    ]
    fp = Fingerprint(
        hashes=np.concatenate([f.hashes for f in prints]),
        offsets=np.concatenate([f.offsets for f in prints]),
    )
    groups = np.repeat(np.arange(len(hyp), dtype=np.int8), [len(f) for f in prints])
    index = index_hashes(fp.hashes)
    return rank_offsets(
        fp, index, looked(index.unique), match_params,
        hypotheses=hyp, groups=groups, top=top, min_window=min_window,
    )  # fmt: skip


def _likeliest(
    hyp: list[tuple[float, float]], screened: list[Candidate], keep: int
) -> list[tuple[float, float]]:
    """The `keep` hypotheses whose best screened candidate holds the most distinct frames (ties: in grid
    order)."""
    best = dict.fromkeys(hyp, 0)
    for c in screened:
        best[(c.speed, c.tempo)] = max(best[(c.speed, c.tempo)], c.distinct_frames)
    return sorted(hyp, key=lambda h: -best[h])[:keep]


def _plain_landmarks(peaks: Peaks, params: FingerprintParams) -> tuple[_Narrower, Fingerprint]:
    """A query's landmarks (every narrower fan-out cut from them on demand) and its plain hashes."""
    narrow = _Narrower(peaks, params, query_pairs(peaks, params))
    return narrow, hashes_from_peaks(peaks, params, Role.QUERY, landmarks=narrow.full)


def densest_window(peaks: Peaks, params: FingerprintParams, seconds: float) -> Peaks:
    """The peaks of the `seconds`-long span of the clip that holds the most of them (the earliest such
    span); `peaks` itself when the clip is no longer, the span holds every peak (a long clip of mostly
    silence: nothing to look up twice) or `seconds` is 0. Offsets stay the clip's frames, so a match still
    places the clip's start."""
    span = round(seconds / params.frame_seconds)
    if span <= 0 or peaks.n_frames <= span or len(peaks) == 0:
        return peaks
    ends = np.searchsorted(peaks.t, peaks.t.astype(np.int64) + span, side="left")
    first = int(np.argmax(ends - np.arange(len(peaks))))
    if first == 0 and int(ends[0]) == len(peaks):
        return peaks
    kept = slice(first, int(ends[first]))
    return Peaks(
        t=peaks.t[kept], freq_hz=peaks.freq_hz[kept], magnitude=peaks.magnitude[kept], n_frames=peaks.n_frames
    )


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

    def fan_out_within(self, fan_out: int, max_triplets: int, min_fan_out: int) -> int:
        """The largest fan-out from `min_fan_out` to `fan_out` whose landmarks are at most `max_triplets`
        triplets (`min_fan_out` if none is): counted from each anchor's targets, nothing is formed."""
        targets = np.bincount(self._pairs[0]).astype(np.int64)
        fan_out = min(fan_out, self._params.query_fan_out)
        while fan_out > min_fan_out:
            kept = np.minimum(targets, fan_out)
            if int((kept * (kept - 1) // 2).sum()) <= max_triplets:
                break
            fan_out -= 1
        return fan_out

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
    looked: _Looked,
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
    found = rank_offsets(
        fp, index, looked(index.unique), match_params,
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
) -> tuple[list[TrackMatch], float, float, dict[int, Candidate]]:
    """Tracks ranked by confidence (each at its best hypothesis); how concentrated the best one's
    matches are: the share of the query frames matching near its offset that sit inside its offset window
    (1.0 = no drift); and how close a rival comes: the most distinct frames of another place (another
    track, or the best one's track beyond +-`drift_frames` of its offset) over the best one's; and the
    candidate each track's result came from."""
    if not candidates:
        return [], 0.0, 0.0, {}
    sizes = track_sizes({c.track_id for c in candidates})
    best: dict[int, TrackMatch] = {}
    chosen: dict[int, Candidate] = {}
    concentration: dict[int, float] = {}
    rival_frames: dict[int, int] = {}
    for c in candidates:
        size = sizes.get(c.track_id)
        if size is None:
            continue
        conf = calibrated_confidence(c, match_params, stored_hashes)
        held = best.get(c.track_id)
        if held is not None and (held.confidence, held.matches) >= (conf, c.distinct_frames):
            continue
        best[c.track_id] = _track_match(c, size, conf, params)
        chosen[c.track_id] = c
        concentration[c.track_id] = c.distinct_frames / max(1, c.nearby_frames)
        rival_frames[c.track_id] = c.rival_frames
    ranked = sorted(best.values(), key=lambda m: (-m.confidence, -m.matches))
    results = [m for m in ranked if m.confidence >= match_params.min_confidence][: match_params.max_results]
    if not results:
        return results, 0.0, 0.0, chosen
    top = results[0]
    runner_up = max([rival_frames[top.track_id]] + [m.matches for m in ranked[1:]])
    return results, concentration[top.track_id], runner_up / max(1, top.matches), chosen
