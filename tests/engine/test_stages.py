"""Spectrogram, peaks and pairs as streaming stages: chunking must not change a single hash."""

import numpy as np
import pytest

from tunescout.engine import fingerprint, hashes
from tunescout.engine.fingerprint import extract_peaks, hashes_from_peaks
from tunescout.engine.params import DEFAULT_PARAMS
from tunescout.engine.peaks import Role
from tunescout.engine.spectrogram import SpectrogramStream, log_power_spectrogram


def _music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Tones that change every 0.25 s over a little noise: enough structure for stable peaks."""
    rng = np.random.default_rng(seed)
    sr = DEFAULT_PARAMS.sample_rate_hz
    n = int(seconds * sr)
    out = 0.01 * rng.standard_normal(n)
    t = np.arange(int(0.25 * sr)) / sr
    for i in range(0, n - t.size, t.size):
        for f in rng.uniform(250, 3000, 3):
            out[i : i + t.size] += 0.2 * np.sin(2 * np.pi * f * t) * np.hanning(t.size)
    return out.astype(np.float32)


@pytest.mark.parametrize("chunk", [1, 1000, 12_345, 80_000])
def test_spectrogram_chunking_is_exact(chunk):
    x = _music_like(4.0)
    whole = log_power_spectrogram(x, DEFAULT_PARAMS)
    stream = SpectrogramStream(DEFAULT_PARAMS)
    parts = [stream.push(x[i : i + chunk]) for i in range(0, x.size, chunk)]
    parts.append(stream.flush())
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # every sample is covered by a frame
    assert (whole.shape[0] - 1) * DEFAULT_PARAMS.hop + DEFAULT_PARAMS.n_fft >= x.size


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("chunk", [777, 8_000, 50_000])
def test_peaks_and_hashes_chunking_is_exact(role, chunk):
    x = _music_like(12.0, seed=3)
    whole = extract_peaks([x], DEFAULT_PARAMS, role)
    chunked = extract_peaks((x[i : i + chunk] for i in range(0, x.size, chunk)), DEFAULT_PARAMS, role)
    assert len(whole) > 50
    np.testing.assert_array_equal(whole.t, chunked.t)
    np.testing.assert_array_equal(whole.freq_hz, chunked.freq_hz)
    a, b = hashes_from_peaks(whole, DEFAULT_PARAMS, role), hashes_from_peaks(chunked, DEFAULT_PARAMS, role)
    np.testing.assert_array_equal(a.hashes, b.hashes)
    np.testing.assert_array_equal(a.offsets, b.offsets)


@pytest.mark.parametrize("block", [1, 37, 200, 10_000])
def test_stored_hashes_formed_block_by_block_are_the_rows_formed_at_once(monkeypatch, block):
    peaks = extract_peaks([_music_like(30.0, seed=5)], DEFAULT_PARAMS, Role.REFERENCE)
    at_once = hashes_from_peaks(peaks, DEFAULT_PARAMS, Role.REFERENCE)
    monkeypatch.setattr(fingerprint, "REFERENCE_BLOCK_PEAKS", block)
    blocked = hashes_from_peaks(peaks, DEFAULT_PARAMS, Role.REFERENCE)
    assert len(peaks) > 1000 and len(at_once) > 5 * len(peaks)
    rows = sorted(zip(blocked.hashes.tolist(), blocked.offsets.tolist(), strict=True))
    assert rows == list(zip(at_once.hashes.tolist(), at_once.offsets.tolist(), strict=True))  # sorted, no dup


def test_peak_density_follows_params():
    x = _music_like(20.0, seed=1)
    ref = extract_peaks([x], DEFAULT_PARAMS, Role.REFERENCE)
    query = extract_peaks([x], DEFAULT_PARAMS, Role.QUERY)
    assert len(ref) / 20.0 <= DEFAULT_PARAMS.ref_peaks_per_second * 1.1
    assert len(query) > len(ref)
    # the design claim: a query of the same audio finds (almost) every peak the stored track kept
    stored = set(zip(ref.t.tolist(), np.round(ref.freq_hz, 3).tolist(), strict=True))
    found = set(zip(query.t.tolist(), np.round(query.freq_hz, 3).tolist(), strict=True))
    assert len(stored & found) >= 0.9 * len(stored)
    # the interpolated frequency of a peak stays within half a bin of its bin
    assert (ref.freq_hz >= DEFAULT_PARAMS.f_min_hz - 10).all() and (
        ref.freq_hz <= DEFAULT_PARAMS.f_max_hz + 10
    ).all()


def test_pure_tone_peak_frequency_is_accurate():
    sr = DEFAULT_PARAMS.sample_rate_hz
    t = np.arange(2 * sr) / sr
    x = (0.5 * np.sin(2 * np.pi * 1234.5 * t)).astype(np.float32)
    peaks = extract_peaks([x], DEFAULT_PARAMS, Role.QUERY)
    assert len(peaks) > 0
    assert np.median(np.abs(peaks.freq_hz - 1234.5)) < 1.0  # well under a bin (7.8 Hz)


@pytest.mark.parametrize("role", list(Role))
def test_silence_and_16_bit_dither_have_no_peaks(role):
    n = 3 * DEFAULT_PARAMS.sample_rate_hz
    rng = np.random.default_rng(0)
    dither = (rng.integers(-1, 2, n) + rng.integers(-1, 2, n)) / 32767  # triangular, +-2 LSB
    for silence in (np.zeros(n), dither):
        assert len(extract_peaks([silence.astype(np.float32)], DEFAULT_PARAMS, role)) == 0


def test_a_quiet_tone_keeps_its_peaks():
    """80 dB below full scale (a very quiet recording) is sound, not silence."""
    sr = DEFAULT_PARAMS.sample_rate_hz
    t = np.arange(2 * sr) / sr
    x = (10 ** (-80 / 20) * np.sin(2 * np.pi * 1234.5 * t)).astype(np.float32)
    for role in Role:
        assert len(extract_peaks([x], DEFAULT_PARAMS, role)) > 0


def test_freq_cells_are_monotonic_and_band_limited():
    f = np.linspace(0, 4000, 5000)
    cells = hashes.freq_to_cell(f, DEFAULT_PARAMS)
    inband = (f >= DEFAULT_PARAMS.f_min_hz) & (f < DEFAULT_PARAMS.f_max_hz)
    assert (cells[~inband] == -1).all()
    c = cells[inband]
    assert c.min() == 0 and c.max() == DEFAULT_PARAMS.freq_cells - 1
    assert (np.diff(c) >= 0).all()


def test_speed_hypothesis_undoes_a_resampled_query():
    """Peaks of a clip played 4 % fast, re-hashed under speed=1.04, land on the original's hashes."""
    sr = DEFAULT_PARAMS.sample_rate_hz
    x = _music_like(10.0, seed=5)
    fast = np.interp(np.arange(0, x.size, 1.04), np.arange(x.size), x).astype(np.float32)
    ref = hashes_from_peaks(
        extract_peaks([x], DEFAULT_PARAMS, Role.REFERENCE), DEFAULT_PARAMS, Role.REFERENCE
    )
    q_peaks = extract_peaks([fast], DEFAULT_PARAMS, Role.QUERY)
    plain = hashes_from_peaks(q_peaks, DEFAULT_PARAMS, Role.QUERY)
    fixed = hashes_from_peaks(q_peaks, DEFAULT_PARAMS, Role.QUERY, speed=1.04)
    ref_set = set(ref.hashes.tolist())
    hit_plain = np.isin(plain.hashes, list(ref_set)).sum()
    hit_fixed = np.isin(fixed.hashes, list(ref_set)).sum()
    assert hit_fixed > 3 * max(hit_plain, 1), (hit_plain, hit_fixed)
    assert sr == 8000
