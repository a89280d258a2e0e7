"""Stage 8: stored peaks round-trip, the coincidence kernel against its reference, and settling a
contested offset by them."""

import logging
import struct
import zlib

import numpy as np
import pytest

from tunescout.engine import kernels, verify
from tunescout.engine.hashes import freq_to_cell
from tunescout.engine.match import TrackMatch, TrackSize, _rescued, _settled
from tunescout.engine.params import DEFAULT_MATCH_PARAMS, DEFAULT_PARAMS
from tunescout.engine.peaks import Peaks
from tunescout.engine.score import Candidate

# the centre frequency (Hz) of every cell, so that peaks built from them land in known cells
_CELL_HZ = np.linspace(DEFAULT_PARAMS.f_min_hz, DEFAULT_PARAMS.f_max_hz, 20_000, endpoint=False)
_CELLS = freq_to_cell(_CELL_HZ, DEFAULT_PARAMS)


def _hz(cells: np.ndarray) -> np.ndarray:
    """A frequency inside each of `cells`."""
    return _CELL_HZ[np.searchsorted(_CELLS, cells) + 2]


def _peaks(t: np.ndarray, cells: np.ndarray) -> Peaks:
    order = np.lexsort((cells, t))
    t, cells = np.asarray(t)[order], np.asarray(cells)[order]
    return Peaks(
        t=t.astype(np.int32),
        freq_hz=_hz(cells),
        magnitude=np.zeros(t.size, np.float32),
        n_frames=int(t.max(initial=-1)) + 1,
    )


def _random_peaks(rng: np.random.Generator, n: int, frames: int) -> Peaks:
    return _peaks(rng.integers(0, frames, n), rng.integers(0, DEFAULT_PARAMS.freq_cells, n))


def test_encode_decode_round_trips_frames_and_cells():
    rng = np.random.default_rng(0)
    peaks = _random_peaks(rng, 3000, 5000)
    stored = verify.decode(verify.encode(peaks, DEFAULT_PARAMS))
    counts = np.diff(stored.frame_start)
    t = np.repeat(np.arange(counts.size), counts)
    np.testing.assert_array_equal(t, peaks.t)
    np.testing.assert_array_equal(stored.cell, freq_to_cell(peaks.freq_hz, DEFAULT_PARAMS))
    # peaks outside the band are not stored; no peak at all is a valid (empty) blob
    outside = Peaks(np.array([3], np.int32), np.array([50.0]), np.zeros(1, np.float32), 4)
    assert len(verify.decode(verify.encode(outside, DEFAULT_PARAMS))) == 0


def test_a_blob_this_version_cannot_read_is_refused_with_its_reason():
    blob = verify.encode(_random_peaks(np.random.default_rng(1), 100, 400), DEFAULT_PARAMS)
    newer = blob[:4] + bytes([verify.PEAKS_FORMAT + 1]) + blob[5:]
    with pytest.raises(verify.PeaksFormatError, match="format 2; this version of tunescout reads format 1"):
        verify.decode(newer)
    with pytest.raises(verify.PeaksFormatError, match="magic"):
        verify.decode(b"XXXX" + blob[4:])
    with pytest.raises(verify.PeaksFormatError, match="too short"):
        verify.decode(blob[:3])
    with pytest.raises(verify.PeaksFormatError, match="corrupt"):
        verify.decode(blob[:12])
    lying = struct.pack("<4sBI", verify.MAGIC, verify.PEAKS_FORMAT, 7) + zlib.compress(b"\0" * 10)
    with pytest.raises(verify.PeaksFormatError, match="expected 35"):
        verify.decode(lying)


@pytest.mark.parametrize("seed", range(3))
def test_peak_coincidences_matches_reference(seed):
    rng = np.random.default_rng(seed)
    stored = verify.decode(verify.encode(_random_peaks(rng, 800, 600), DEFAULT_PARAMS))
    query_t = rng.integers(0, 200, 150).astype(np.int64)
    query_cell = rng.integers(0, DEFAULT_PARAMS.freq_cells, 150).astype(np.int32)
    offsets = np.array([-250, -3, 0, 17, 399, 450, 700], np.int64)
    for frame_reach, cell_reach in ((0, 0), (1, 1), (2, 3)):
        args = (stored.frame_start, stored.cell, query_t, query_cell, offsets, frame_reach, cell_reach)
        np.testing.assert_array_equal(
            kernels.peak_coincidences(*args), kernels.peak_coincidences_reference(*args)
        )


def test_coincidences_count_the_clip_at_its_place_best_of_the_search_span():
    rng = np.random.default_rng(3)
    track = _random_peaks(rng, 1500, 3000)
    stored = verify.decode(verify.encode(track, DEFAULT_PARAMS))
    # the clip: the track's peaks of frames 1000-1299, a frame later than stored (within the search span)
    inside = (track.t >= 1000) & (track.t < 1300)
    clip = Peaks(track.t[inside] - 1000 + 1, track.freq_hz[inside], track.magnitude[inside], 301)
    t, cells = verify.query_cells(clip, DEFAULT_PARAMS)
    at, away = verify.coincidences(stored, t, cells, [1000, 2000])
    assert at == t.size and away < t.size // 2


def _contest(rival_frames: int = 40) -> tuple[list[TrackMatch], dict[int, Candidate], Peaks, bytes]:
    """A track whose clip triplets put it at 500 (50 frames) with a rival place at 2000; the clip's peaks
    are the track's at 2000."""
    rng = np.random.default_rng(4)
    track = _random_peaks(rng, 2000, 4000)
    inside = (track.t >= 2000) & (track.t < 2400)
    clip = Peaks(track.t[inside] - 2000, track.freq_hz[inside], track.magnitude[inside], 400)
    c = Candidate(7, 500, 60, 900, 1.0, 1.0, distinct_frames=50, rival_frames=rival_frames, rival_offset=2000)
    match = TrackMatch(7, 500, 500 * DEFAULT_PARAMS.frame_seconds, 50, 900, 0.06, 0.01, 0.99, 1.0, 1.0)
    return [match], {7: c}, clip, verify.encode(track, DEFAULT_PARAMS)


def test_a_contested_offset_moves_where_the_clip_peaks_meet_the_track():
    results, chosen, clip, blob = _contest()
    settled = _settled(results, chosen, clip, lambda ids: {7: blob}, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS)
    assert (settled[0].offset_frames, settled[0].matches) == (2000, 40)
    assert settled[0].offset_s == pytest.approx(2000 * DEFAULT_PARAMS.frame_seconds)
    assert settled[0].confidence == results[0].confidence


def test_an_uncontested_answer_or_one_without_stored_peaks_keeps_its_offset(caplog):
    results, chosen, clip, blob = _contest(rival_frames=10)  # the rival holds a fifth of the frames
    asked = []

    def peaks_of(ids):
        asked.append(ids)
        return {7: blob}

    assert _settled(results, chosen, clip, peaks_of, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS) == results
    assert asked == []  # not even fetched
    results, chosen, clip, blob = _contest()
    assert _settled(results, chosen, clip, lambda ids: {}, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS) == results
    assert _settled(results, chosen, clip, None, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS) == results
    with caplog.at_level(logging.WARNING):
        broken = _settled(
            results, chosen, clip, lambda ids: {7: b"nonsense"}, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS
        )
    assert broken == results and "stored peaks unreadable" in caplog.text


def test_a_place_the_peaks_do_not_prefer_clearly_keeps_the_answer():
    results, chosen, clip, blob = _contest()
    # the answer is the clip's place; its rival (500) counts far fewer of the clip's peaks
    chosen = {7: Candidate(7, 2000, 60, 900, 1.0, 1.0, distinct_frames=50, rival_frames=45, rival_offset=500)}
    results = [TrackMatch(7, 2000, 32.0, 50, 900, 0.06, 0.01, 0.99, 1.0, 1.0)]
    settled = _settled(results, chosen, clip, lambda ids: {7: blob}, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS)
    assert settled == results


def _weak(track: Peaks, offset: int, frames: int = 6) -> Candidate:
    return Candidate(7, offset, frames + 2, 900, 1.0, 1.0, distinct_frames=frames)


def _sizes(ids):
    return {7: TrackSize(n_hashes=5000)}


def test_a_weak_candidate_whose_place_the_peaks_confirm_is_rescued_and_a_chance_one_is_not():
    rng = np.random.default_rng(5)
    track = _random_peaks(rng, 4000, 8000)
    blob = verify.encode(track, DEFAULT_PARAMS)
    # a noisy clip of frames 3000-3600: a third of the track's peaks there, and as many peaks of noise
    inside = np.flatnonzero((track.t >= 3000) & (track.t < 3600))
    kept = rng.choice(inside, inside.size // 3, replace=False)
    noise = _random_peaks(rng, kept.size, 600)
    clip = _peaks(
        np.concatenate([track.t[kept] - 3000, noise.t]),
        np.concatenate(
            [freq_to_cell(track.freq_hz[kept], DEFAULT_PARAMS), freq_to_cell(noise.freq_hz, DEFAULT_PARAMS)]
        ),
    )
    found = _rescued(
        [_weak(track, 3000)], clip, _sizes, lambda ids: {7: blob}, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS
    )
    assert [m.offset_frames for m in found] == [3000] and found[0].confidence > 0.9
    # the same track at a place the clip is not from, and a track stored without peaks: nothing
    assert (
        _rescued(
            [_weak(track, 6000)], clip, _sizes, lambda ids: {7: blob}, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS
        )
        == []
    )
    assert (
        _rescued([_weak(track, 3000)], clip, _sizes, lambda ids: {}, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS)
        == []
    )
    # too few frames to be a candidate at all
    few = _weak(track, 3000, frames=DEFAULT_MATCH_PARAMS.rescue_min_frames - 1)
    assert _rescued([few], clip, _sizes, lambda ids: {7: blob}, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS) == []
