"""The resampler of stage 1: exact positions whatever the cuts, the band the fingerprint reads kept flat,
what would alias into it removed, and every sample format downmixed to [-1, 1]."""

from types import SimpleNamespace

import numpy as np
import pytest
from av.audio.frame import AudioFrame

from tunescout.engine.decode import _MonoResampler
from tunescout.engine.errors import NotAudioError
from tunescout.engine.params import DEFAULT_PARAMS
from tunescout.engine.peaks import analysis_bins
from tunescout.engine.resample import (
    PASSBAND,
    STOPBAND,
    PolyphaseResampler,
    filter_bank,
    mono,
    polyphase,
    polyphase_reference,
)

OUT_HZ = 8000
RATES = [44_100, 48_000, 22_050, 16_000, 11_025, 96_000, 7350, 44_101]


def resample(x: np.ndarray, in_rate: int, cuts: list[int] | None = None) -> np.ndarray:
    stream = PolyphaseResampler(in_rate, OUT_HZ)
    pieces = np.split(x, cuts) if cuts else [x]
    return np.concatenate([stream.push(p) for p in pieces] + [stream.flush()])


def tone(hz: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(round(rate * seconds)) / rate).astype(np.float32)


@pytest.mark.parametrize("in_rate", RATES)
def test_output_does_not_depend_on_the_cuts(in_rate):
    x = np.random.default_rng(1).normal(size=in_rate).astype(np.float32)
    whole = resample(x, in_rate)
    cut = resample(x, in_rate, cuts=[1, 2, 7, 300, 301, in_rate // 3, in_rate // 2, in_rate - 5])
    np.testing.assert_array_equal(cut, whole)
    assert whole.size == -(-in_rate * OUT_HZ // in_rate)  # ceil(inputs * out / in)


@pytest.mark.parametrize("in_rate", RATES)
def test_the_fingerprint_band_is_kept_and_what_would_alias_into_it_is_removed(in_rate):
    nyquist = OUT_HZ / 2
    assert DEFAULT_PARAMS.f_max_hz <= PASSBAND * nyquist
    # what lies between the bands aliases to above (2 - STOPBAND) * nyquist, past every bin peaks are read in
    bin_hz = DEFAULT_PARAMS.sample_rate_hz / DEFAULT_PARAMS.n_fft
    assert analysis_bins(DEFAULT_PARAMS)[1] * bin_hz <= (2 - STOPBAND) * nyquist
    settle = 200  # output samples at each end where the filter reads the zeros around the signal
    for hz in (300.0, 1000.0, PASSBAND * nyquist):
        if hz < in_rate / 2:
            out = resample(tone(hz, in_rate), in_rate)[settle:-settle]
            assert np.sqrt(2 * np.mean(out**2)) == pytest.approx(1.0, abs=0.002), hz
    for hz in (STOPBAND * nyquist, 6000.0, 10_000.0):
        if hz < in_rate / 2:
            out = resample(tone(hz, in_rate), in_rate)[settle:-settle]
            assert 20 * np.log10(np.sqrt(2 * np.mean(out**2))) < -65, hz


@pytest.mark.parametrize("in_rate", RATES)
def test_constant_input_keeps_its_level(in_rate):
    out = resample(np.full(in_rate, 0.5, np.float32), in_rate)
    np.testing.assert_allclose(out[100:-100], 0.5, atol=1e-5)


def test_same_rate_is_the_input():
    x = np.random.default_rng(2).normal(size=999).astype(np.float32)
    np.testing.assert_array_equal(resample(x, OUT_HZ, cuts=[10, 500]), x)


def test_a_pass_starting_where_the_grids_meet_gives_the_same_samples():
    # 44.1 kHz and 8 kHz meet every 441 input / 80 output samples: what the decoder relies on after a seek
    x = np.random.default_rng(3).normal(size=44_100).astype(np.float32)
    whole = resample(x, 44_100)
    up, down, table = filter_bank(44_100, OUT_HZ)
    k = 30
    part = resample(x[k * down :], 44_100)
    skip = table.shape[1]  # output samples whose taps reach before the part's first input
    np.testing.assert_array_equal(part[skip : skip + 4000], whole[k * up + skip : k * up + skip + 4000])


def frame(samples: np.ndarray, fmt: str, layout: str) -> AudioFrame:
    f = AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
    f.sample_rate = 44_100
    return f


@pytest.mark.parametrize(
    ("fmt", "samples", "want"),
    [
        ("fltp", np.array([[1.0, -1.0, 0.5], [1.0, 0.0, -0.5]], np.float32), [1.0, -0.5, 0.0]),
        ("flt", np.array([[1.0, 1.0, -1.0, 0.0, 0.5, -0.5]], np.float32), [1.0, -0.5, 0.0]),
        ("s16", np.array([[-32768, -32768, 16384, 0, 0, 0]], np.int16), [-1.0, 0.25, 0.0]),
        ("s16p", np.array([[-32768, 16384, 0], [-32768, 0, 0]], np.int16), [-1.0, 0.25, 0.0]),
        ("s32p", np.array([[2**30, 0, -(2**31)], [2**30, 0, -(2**31)]], np.int32), [0.5, 0.0, -1.0]),
        ("u8", np.array([[0, 0, 128, 128, 255, 255]], np.uint8), [-1.0, 0.0, 127 / 128]),
        ("dblp", np.array([[0.25, 1.0, 0.0], [0.25, -1.0, 0.0]], np.float64), [0.25, 0.0, 0.0]),
    ],
)
def test_every_sample_format_downmixes_to_the_mean_of_its_channels(fmt, samples, want):
    got = mono(frame(samples, fmt, "stereo"))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_mono_float_frames_pass_through():
    samples = np.array([[0.1, -0.2, 0.3]], np.float32)
    np.testing.assert_array_equal(mono(frame(samples, "flt", "mono")), samples[0])


@pytest.mark.parametrize("in_rate", [44_100, 48_000, 7350, 44_101])
def test_polyphase_matches_reference(in_rate):
    out_rate = 8000
    up, down, table = filter_bank(in_rate, out_rate)
    rng = np.random.default_rng(in_rate)
    buffer = rng.normal(size=5000).astype(np.float32)
    taps = table.shape[1]
    start = -17  # buffer[0] is input sample -17
    first = (taps // 2 - 1 + start) * up // down + 3  # the first output whose taps are all in the buffer
    count = (buffer.size - taps) * up // down - 4
    got = np.empty(count, np.float32)
    polyphase(buffer, start, table, up, down, first, got)
    want = polyphase_reference(buffer, start, table, up, down, first, count)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert count > 100


def test_a_frame_without_channels_is_not_audio():
    frame = SimpleNamespace(
        layout=SimpleNamespace(nb_channels=0, name="unknown"),
        format=SimpleNamespace(name="fltp", is_planar=True),
        sample_rate=44_100,
        samples=0,
    )
    with pytest.raises(ValueError, match="no channels"):
        mono(frame)  # type: ignore[arg-type]
    with pytest.raises(NotAudioError, match="cannot convert this audio"):
        _MonoResampler(OUT_HZ)._resample(frame)  # type: ignore[arg-type]
