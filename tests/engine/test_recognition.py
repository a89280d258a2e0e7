"""End to end through the engine: real music clips (tests/data) stored in an EmbeddedShard, then
clean, noisy, MP3-re-encoded, speed- and tempo-changed excerpts recognised with track and offset."""

import io
from collections.abc import Hashable
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from tunescout.engine import errors
from tunescout.engine.decode import decode_all
from tunescout.engine.fingerprint import extract_peaks, fingerprint_audio, fingerprint_pcm
from tunescout.engine.match import TrackMatch, densest_window, match_peaks, shard_track_sizes
from tunescout.engine.params import DEFAULT_PARAMS, FINGERPRINT_VERSION, MatchParams
from tunescout.engine.peaks import Peaks, Role
from tunescout.engine.score import Candidate, Lookup, calibrated_confidence, frames_needed
from tunescout.store import EmbeddedShard, TrackMeta
from tunescout.store.shard import Postings

DATA = Path(__file__).resolve().parents[1] / "data"
STORED = ["battle-epic", "breaking_the_chains", "elvish-theme"]
UNSTORED = "knolls"
SR = DEFAULT_PARAMS.sample_rate_hz


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    store = EmbeddedShard(tmp_path_factory.mktemp("shard"), fingerprint_version=FINGERPRINT_VERSION)
    for name in STORED:
        fp = fingerprint_audio(DATA / f"{name}.opus", role=Role.REFERENCE)
        meta = TrackMeta(file_sha1=fp.file_sha1, title=name, duration_s=fp.duration_s)
        outcome = store.ingest(meta, fp.fingerprint.hashes, fp.fingerprint.offsets)
        assert not outcome.already_present
    yield store
    store.close()


@pytest.fixture(scope="module")
def pcm():
    return {name: decode_all(DATA / f"{name}.opus", sample_rate_hz=SR)[0] for name in [*STORED, UNSTORED]}


def recognise(shard, clip: np.ndarray) -> list[TrackMatch]:
    peaks = extract_peaks([clip.astype(np.float32)], DEFAULT_PARAMS, Role.QUERY)
    return match_peaks(peaks, shard.lookup, shard_track_sizes(shard))


def title_of(shard, match: TrackMatch) -> str:
    return shard.get_tracks([match.track_id])[match.track_id].title


def excerpt(pcm, name: str, start_s: float, seconds: float) -> np.ndarray:
    return pcm[name][int(start_s * SR) : int((start_s + seconds) * SR)]


def as_16_bit(pcm: np.ndarray) -> np.ndarray:
    """`pcm` rounded to 16-bit steps, as a file would hold it (what is left of a very quiet recording)."""
    return (np.round(pcm * 32767) / 32767).astype(np.float32)


def counted_lookup(shard, looked: dict, key: Hashable) -> Lookup:
    """`shard.lookup` that adds the number of hashes each call asks for to `looked[key]`."""

    def lookup(hashes: np.ndarray, cap: int) -> Postings:
        looked[key] = looked.get(key, 0) + hashes.size
        return shard.lookup(hashes, cap)

    return lookup


def assert_found(shard, results, name: str, start_s: float) -> None:
    assert results, f"{name} not recognised"
    best = results[0]
    assert title_of(shard, best) == name
    assert abs(best.offset_s - start_s) <= 0.1, (best.offset_s, start_s)
    assert 0.5 <= best.confidence <= 1.0
    assert 0 < best.query_hash_share <= 1 and 0 < best.track_hash_share <= 1


@pytest.mark.parametrize("name", STORED)
@pytest.mark.parametrize("seconds", [10.0, 5.0, 3.0])
def test_clean_excerpts(shard, pcm, name, seconds):
    start = 11.3
    assert_found(shard, recognise(shard, excerpt(pcm, name, start, seconds)), name, start)


@pytest.mark.parametrize("gain_db", [-40, -60])
def test_quiet_excerpt(shard, pcm, gain_db):
    """A recording far quieter than the stored track (a phone at low gain), kept as 16-bit samples."""
    quiet = as_16_bit(excerpt(pcm, "elvish-theme", 20.0, 5.0) * 10 ** (gain_db / 20))
    assert_found(shard, recognise(shard, quiet), "elvish-theme", 20.0)


def test_quietly_stored_track_is_found_by_a_clip_at_normal_level(tmp_path, pcm):
    """A track mastered (or captured) 60 dB quieter than usual keeps its peaks when stored."""
    quiet = as_16_bit(pcm["elvish-theme"] * 10 ** (-60 / 20))
    fp = fingerprint_pcm(quiet, DEFAULT_PARAMS, Role.REFERENCE)
    with EmbeddedShard(tmp_path, fingerprint_version=FINGERPRINT_VERSION) as store:
        meta = TrackMeta(file_sha1="0" * 40, title="elvish-theme", duration_s=quiet.size / SR)
        store.ingest(meta, fp.hashes, fp.offsets)
        assert_found(store, recognise(store, excerpt(pcm, "elvish-theme", 20.0, 5.0)), "elvish-theme", 20.0)


def test_quiet_unstored_excerpt_gives_no_result(shard, pcm):
    assert recognise(shard, as_16_bit(excerpt(pcm, UNSTORED, 20.0, 10.0) * 10 ** (-60 / 20))) == []


@pytest.mark.parametrize("snr_db", [10, 5])
def test_noisy_excerpt(shard, pcm, snr_db):
    clip = excerpt(pcm, "breaking_the_chains", 7.5, 10.0)
    noise = np.random.default_rng(snr_db).standard_normal(clip.size)
    noise *= np.sqrt(np.mean(clip**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    assert_found(shard, recognise(shard, clip + noise), "breaking_the_chains", 7.5)


def test_mp3_reencoded_excerpt(shard, pcm):
    clip = excerpt(pcm, "elvish-theme", 4.0, 10.0)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=SR, layout="mono")
        stream.bit_rate = 32_000
        frame = av.AudioFrame.from_ndarray(clip[None, :].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = SR
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    reencoded, _ = decode_all(buf.getvalue(), sample_rate_hz=SR)
    assert_found(shard, recognise(shard, reencoded), "elvish-theme", 4.0)


@pytest.mark.parametrize("speed", [0.95, 0.97, 1.04, 1.05])
def test_speed_changed_excerpt(shard, pcm, speed):
    """Played `speed` times faster, pitch included: offsets come back in the track's own time."""
    start = 6.0
    source = excerpt(pcm, "battle-epic", start, 10.0 * speed + 0.1)
    positions = np.arange(0, 10.0 * SR) * speed
    clip = np.interp(positions, np.arange(source.size), source)
    results = recognise(shard, clip)
    assert_found(shard, results, "battle-epic", start)
    assert abs(results[0].speed - speed) < 0.02


@pytest.mark.parametrize("name", ["battle-epic", "breaking_the_chains"])
@pytest.mark.parametrize("speed", [0.9625, 0.9775, 1.0075, 1.0225, 1.0375])
def test_short_excerpt_at_any_speed(shard, pcm, name, speed):
    """3 s played at a speed between two hypotheses of a 1.5 % grid (each of these failed with one)."""
    start = 8.0
    source = excerpt(pcm, name, start, 3.0 * speed + 0.1)
    clip = np.interp(np.arange(0, 3.0 * SR) * speed, np.arange(source.size), source)
    assert_found(shard, recognise(shard, clip), name, start)


@pytest.mark.parametrize("speed", [0.9625, 1.0375])
def test_the_hypothesis_screen_hashes_two_hypotheses_in_full(shard, pcm, speed):
    """Every speed/tempo hypothesis is screened with a few triplets per anchor and only the likeliest two
    are hashed in full: far fewer hashes looked up than hashing all of them in full, the same answer."""
    start = 12.0
    source = excerpt(pcm, "breaking_the_chains", start, 10.0 * speed + 0.1)
    clip = np.interp(np.arange(0, 10.0 * SR) * speed, np.arange(source.size), source)
    peaks = extract_peaks([clip.astype(np.float32)], DEFAULT_PARAMS, Role.QUERY)
    looked: dict[str, int] = {}
    sizes = shard_track_sizes(shard)
    no_screen = MatchParams(hypothesis_screen_keep=0)
    full = match_peaks(peaks, counted_lookup(shard, looked, "full"), sizes, match_params=no_screen)
    screened = match_peaks(peaks, counted_lookup(shard, looked, "screened"), sizes)
    assert_found(shard, full, "breaking_the_chains", start)
    assert_found(shard, screened, "breaking_the_chains", start)
    # the winning hypothesis was hashed in full, not only screened: as much evidence as hashing all
    assert (screened[0].speed, screened[0].matches) == (full[0].speed, full[0].matches)
    assert looked["screened"] < 0.7 * looked["full"], looked


def test_a_passage_the_track_repeats_runs_the_later_stages(tmp_path, shard, pcm):
    """The plain lookup ends a clear answer; where another place comes as close (here the track plays the
    passage twice) the later stages run for more evidence, and the answer is one of the two places. The
    loop is a whole number of peak blocks long (30 x 32 frames, 15.36 s), so both copies store the same
    peaks."""
    loop = 30 * DEFAULT_PARAMS.peak_block_frames * DEFAULT_PARAMS.hop
    looped = np.concatenate([pcm["battle-epic"][:loop]] * 2)
    store = EmbeddedShard(tmp_path, fingerprint_version=FINGERPRINT_VERSION)
    fp = fingerprint_pcm(looped)
    store.ingest(TrackMeta(file_sha1="1" * 40, title="looped"), fp.hashes, fp.offsets)
    never_contested = MatchParams(early_exit_rival_share=float("inf"))
    looked: dict[tuple[str, str], int] = {}
    for where, shard_, clip in (
        ("repeat", store, excerpt(pcm, "battle-epic", 2.0, 10.0)),
        ("unique", shard, excerpt(pcm, "elvish-theme", 2.0, 10.0)),
    ):
        peaks = extract_peaks([clip], DEFAULT_PARAMS, Role.QUERY)
        sizes = shard_track_sizes(shard_)
        for rule, params in (("default", MatchParams()), ("never", never_contested)):
            lookup = counted_lookup(shard_, looked, (where, rule))
            results = match_peaks(peaks, lookup, sizes, match_params=params)
            assert results and results[0].confidence >= 0.99
            if where == "repeat":
                assert min(abs(results[0].offset_s - 2.0), abs(results[0].offset_s - 2.0 - loop / SR)) <= 0.1
    store.close()
    assert looked[("unique", "default")] == looked[("unique", "never")], looked
    assert looked[("repeat", "default")] > 2 * looked[("repeat", "never")], looked


def test_unstored_track_gives_no_result(shard, pcm):
    for start in (0.0, 10.0, 19.0):
        assert recognise(shard, excerpt(pcm, UNSTORED, start, 10.0)) == []


def test_noise_and_silence_give_no_result(shard):
    rng = np.random.default_rng(0)
    assert recognise(shard, 0.1 * rng.standard_normal(10 * SR)) == []
    assert recognise(shard, np.zeros(10 * SR)) == []


def test_ingest_is_idempotent_by_sha1(shard):
    fp = fingerprint_audio(DATA / "battle-epic.opus", role=Role.REFERENCE)
    before = shard.stats()
    outcome = shard.ingest(
        TrackMeta(file_sha1=fp.file_sha1, title="again"), fp.fingerprint.hashes, fp.fingerprint.offsets
    )
    assert outcome.already_present and outcome.track.title == "battle-epic"
    assert shard.stats() == before


def test_fingerprint_range_and_errors():
    part = fingerprint_audio(DATA / "knolls.opus", role=Role.QUERY, start_s=5.0, duration_s=4.0)
    assert part.duration_s == pytest.approx(4.0, abs=0.01)
    with pytest.raises(errors.StartBeyondEndError):
        fingerprint_audio(DATA / "knolls.opus", start_s=45.0)
    with pytest.raises(errors.ClipTooShortError):
        fingerprint_audio(DATA / "knolls.opus", duration_s=0.5)
    with pytest.raises(errors.NotAudioError):
        fingerprint_audio(b"this is not audio at all" * 100)
    with pytest.raises(errors.EmptyAudioError):
        fingerprint_audio(b"")


@pytest.mark.parametrize(("name", "start"), [("elvish-theme", 15.0), ("breaking_the_chains", 3.0)])
def test_peaks_moved_by_a_frame_are_found_by_the_jitter_lookup(shard, pcm, name, start):
    """Reverb and noise move peaks by a frame or so and drop many (a phone in a room), which breaks the
    triplets' exact frame deltas: the exact lookups then find too little, and the last lookup (targets
    moved +-1 frame) finds the clip at its offset."""
    peaks = extract_peaks([excerpt(pcm, name, start, 10.0)], DEFAULT_PARAMS, Role.QUERY)
    rng = np.random.default_rng(3)
    kept = rng.random(peaks.t.size) < 0.3
    t = np.maximum(peaks.t + rng.integers(-1, 2, peaks.t.size), 0).astype(np.int32)[kept]
    freq, mag = peaks.freq_hz[kept], peaks.magnitude[kept]
    order = np.lexsort((freq, t))  # Peaks are sorted by (frame, bin)
    moved = replace(peaks, t=t[order], freq_hz=freq[order], magnitude=mag[order])
    sizes = shard_track_sizes(shard)
    without = match_peaks(moved, shard.lookup, sizes, match_params=MatchParams(jitter_frames=0))
    assert without == [], "precondition: the moved peaks defeat the exact lookups"
    results = match_peaks(moved, shard.lookup, sizes)
    assert_found(shard, results, name, start)


def test_a_long_clip_is_matched_over_its_busiest_span(shard, pcm):
    """A clip longer than `long_clip_window_s` is looked up over its densest span first (a silent start
    is skipped) and the speed/tempo and jitter stages read only that span: a whole stored track is named
    from the span, a speed-changed clip, which no plain lookup finds, is still placed at its start in the
    track's time, and a whole unstored track, which runs every stage, looks up far fewer hashes."""
    speed, silence_s, start = 1.04, 3.0, 10.0
    source = excerpt(pcm, "battle-epic", start, 16.0 * speed + 0.1)
    music = np.interp(np.arange(0, 16.0 * SR) * speed, np.arange(source.size), source)
    sped = np.concatenate([np.zeros(int(silence_s * SR)), music]).astype(np.float32)
    clips = {
        "stored": (pcm["elvish-theme"], "elvish-theme", 0.0),
        "speed": (sped, "battle-epic", start - silence_s * speed),  # the clip starts before the music
        "unstored": (pcm[UNSTORED], None, None),
    }
    sizes = shard_track_sizes(shard)
    looked: dict[tuple[str, float], int] = {}
    for what, (clip, name, offset_s) in clips.items():
        peaks = extract_peaks([clip.astype(np.float32)], DEFAULT_PARAMS, Role.QUERY)
        for window_s in (0.0, 8.0):
            params = MatchParams(long_clip_window_s=window_s)
            counted = counted_lookup(shard, looked, (what, window_s))
            results = match_peaks(peaks, counted, sizes, match_params=params)
            if name is None:
                assert results == []
            else:
                assert_found(shard, results, name, offset_s)
            if what == "speed":
                assert abs(results[0].speed - speed) < 0.02
        # the speed-changed clip pays the span's plain lookup before the whole clip's: no saving there
        assert what == "speed" or looked[(what, 8.0)] < 0.6 * looked[(what, 0.0)], what


def test_densest_window_keeps_the_busiest_span_of_a_long_clip():
    frame_s = DEFAULT_PARAMS.frame_seconds
    t = np.concatenate([np.arange(0, 100, 10), np.arange(300, 400, 2), np.arange(500, 600, 2)])
    peaks = Peaks(
        t=t.astype(np.int32), freq_hz=np.linspace(300, 3000, t.size), magnitude=np.ones(t.size, np.float32),
        n_frames=700,
    )  # fmt: skip
    window = densest_window(peaks, DEFAULT_PARAMS, 150 * frame_s)
    np.testing.assert_array_equal(window.t, np.arange(300, 400, 2))  # the first of two equal spans
    np.testing.assert_array_equal(window.freq_hz, peaks.freq_hz[10:60])
    assert window.n_frames == 700
    assert densest_window(peaks, DEFAULT_PARAMS, 700 * frame_s) is peaks  # not longer than the window
    assert densest_window(peaks, DEFAULT_PARAMS, 0.0) is peaks  # 0: the whole clip
    # a long clip whose peaks all lie in one span (silence around them): the clip itself, looked up once
    quiet = replace(peaks, t=np.arange(300, 400, 2).astype(np.int32), freq_hz=peaks.freq_hz[10:60],
                    magnitude=peaks.magnitude[10:60])  # fmt: skip
    assert densest_window(quiet, DEFAULT_PARAMS, 150 * frame_s) is quiet
    with pytest.raises(ValueError, match="long_clip_window_s"):
        MatchParams(long_clip_window_s=-1.0)


def test_confidence_midpoint_grows_with_the_query():
    """A whole song offers chance agreement far more hashes than a 10 s clip: the same evidence is worth
    less from it; up to a 10 s clip's hashes nothing changes, and frames_needed stays a lower bound."""
    params = MatchParams()
    ten_s = params.calibration_query_hashes
    c = Candidate(track_id=1, offset_frames=0, matches=12, query_hashes=ten_s, speed=1.0, tempo=1.0,
                  distinct_frames=12)  # fmt: skip
    short = calibrated_confidence(c, params)
    assert calibrated_confidence(replace(c, query_hashes=ten_s // 4), params) == short > 0.95
    song = calibrated_confidence(replace(c, query_hashes=48 * ten_s), params)  # ~ 4 minutes
    assert song < 0.5
    for jittered in (False, True):
        needed = frames_needed(params, jittered=jittered)
        at_least = replace(c, query_hashes=48 * ten_s, distinct_frames=needed - 1, jittered=jittered)
        assert calibrated_confidence(at_least, params) < params.min_confidence


def test_confidence_midpoint_grows_with_the_catalogue():
    """Chance agreement grows with the catalogue: the same evidence is worth less against more tracks."""
    params = MatchParams()
    c = Candidate(track_id=1, offset_frames=0, matches=12, query_hashes=100, speed=1.0, tempo=1.0,
                  distinct_frames=12)  # fmt: skip
    small = calibrated_confidence(c, params, 0)
    assert calibrated_confidence(c, params, params.calibration_hashes) == small
    big = calibrated_confidence(c, params, 48 * params.calibration_hashes)  # ~ 10,000 tracks
    assert small > 0.95 and big < 0.5
    jittered = replace(c, jittered=True, distinct_frames=12)  # what chance reaches in the jitter lookup
    assert calibrated_confidence(jittered, params, 0) < 0.5
