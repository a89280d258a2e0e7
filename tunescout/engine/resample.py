"""Stage 1, second half: decoded frames of any format -> mono float32 at the fingerprint rate.

ffmpeg's resampler (swresample, through `av.AudioResampler`) filters at the input rate with a filter
sharp enough for hi-fi: 44.1 kHz -> 8 kHz took as much CPU as decoding Vorbis itself. The fingerprint
reads only up to `PASSBAND` of the output band (`FingerprintParams.f_max_hz`, 3.4 of 4 kHz), so the
anti-alias filter here is flat to there and may let aliases into the top of the band that no peak is
picked from: a windowed-sinc polyphase filter (`polyphase`, a numba kernel beside its NumPy reference)
about 5x cheaper than swresample's.

Positions are exact: output sample n lies at input sample n * in_rate / out_rate, computed in integers
(its fraction picks one of the filter's phases, rounded to 1 / `MAX_PHASES` for rate pairs that would need
more), so the output does not depend on how the input is cut into frames, and a pass that starts on a
sample where the two grids meet gives the same samples as a pass from the beginning (away from its first
`taps / 2` input samples, which the decoder's pre-roll covers).

The downmix is the mean of the channels: input in [-1, 1] stays in [-1, 1] (ffmpeg's default -3 dB pan
law would reach 1.41 on a loud centred mix).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import numpy as np
from av.audio.frame import AudioFrame
from numba import njit

PASSBAND: Final = 0.85  # of the output Nyquist frequency: flat to here (3.4 kHz at 8 kHz)
STOPBAND: Final = 1.125  # of the output Nyquist: attenuated from here; the aliases of what lies between
# land above (2 - STOPBAND) * Nyquist = 3.5 kHz at 8 kHz, beyond every bin the peak picker reads
UPSAMPLING_PASSBAND: Final = 0.95  # of the input Nyquist, for inputs below the output rate (7.35 kHz)
ATTENUATION_DB: Final = 70.0  # dB in the stop band (Kaiser window)
MAX_PHASES: Final = 1024  # filter phases kept; rates whose ratio needs more round the phase to 1/1024

# integer sample formats (u8 once centred on 0) -> the factor to [-1, 1)
_SCALE: Final = {"u8": 1 / 128, "s16": 1 / 32768, "s32": 1 / 2**31, "s64": 1 / 2**63}


@lru_cache(maxsize=16)
def filter_bank(in_rate_hz: int, out_rate_hz: int) -> tuple[int, int, np.ndarray]:
    """(up, down, table): output n lies at input n * down / up; table[phase] holds the taps of the phases
    (`MAX_PHASES` at most), each row summing to 1 (unity gain at 0 Hz)."""
    gcd = math.gcd(in_rate_hz, out_rate_hz)
    up, down = out_rate_hz // gcd, in_rate_hz // gcd
    phases = min(up, MAX_PHASES)
    # flat to the fingerprint's band (or near the input's own Nyquist frequency when that is lower);
    # stopped where an alias (downsampling) or image (upsampling) would land in that band
    f_pass = min(PASSBAND * 0.5 * out_rate_hz, UPSAMPLING_PASSBAND * 0.5 * in_rate_hz)
    f_stop = min(STOPBAND * 0.5 * out_rate_hz, in_rate_hz - f_pass)
    cutoff = 0.5 * (f_pass + f_stop) / in_rate_hz  # cycles per input sample
    width = 2 * math.pi * (f_stop - f_pass) / in_rate_hz  # radians per input sample
    taps = math.ceil((ATTENUATION_DB - 8) / (2.285 * width))  # Kaiser's estimate
    taps += taps % 2
    beta = 0.1102 * (ATTENUATION_DB - 8.7)
    t = np.arange(taps)[None, :] - (taps // 2 - 1) - np.arange(phases)[:, None] / phases
    window = np.i0(beta * np.sqrt(np.clip(1 - (t / (taps / 2)) ** 2, 0, None))) / np.i0(beta)
    table = np.sinc(2 * cutoff * t) * window
    table /= table.sum(axis=1, keepdims=True)
    return up, down, table.astype(np.float32)


def mono(frame: AudioFrame) -> np.ndarray:
    """The frame's samples as mono float32: the mean of its channels, integers scaled to [-1, 1)."""
    channels = frame.layout.nb_channels
    if channels < 1:
        raise ValueError("the frame declares no channels")
    if frame.format.name == "fltp":  # most lossy decoders' output: add the planes, no copy of them first
        planes = [np.frombuffer(plane, np.float32, count=frame.samples) for plane in frame.planes]
        summed = planes[0].copy()
        for plane in planes[1:]:
            summed += plane
    else:
        samples = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
        if not frame.format.is_planar and channels > 1:
            samples = samples.reshape(-1, channels).T
        if frame.format.name.rstrip("p") == "u8":
            samples = samples.astype(np.float32) - 128
        summed = samples.sum(axis=0, dtype=np.float32)
    scale = _SCALE.get(frame.format.name.rstrip("p"), 1.0) / channels
    return summed if scale == 1.0 else summed * np.float32(scale)


class PolyphaseResampler:
    """Streams mono float32 from `in_rate_hz` to `out_rate_hz`: `push` input as it comes, `flush` at the
    end. The output is ceil(inputs * out / in) samples, whatever the cuts between pushes."""

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        self.in_rate_hz = in_rate_hz
        self._identity = in_rate_hz == out_rate_hz
        self._up, self._down, self._table = filter_bank(in_rate_hz, out_rate_hz)
        self._half = self._table.shape[1] // 2
        # input held for the taps still to come; buffer[0] is input sample number `self._start`
        self._buffer = np.zeros(self._half - 1, np.float32)
        self._start = -(self._half - 1)  # zeros before the first sample
        self._next = 0  # the next output sample's number
        self._received = 0  # input samples pushed

    def push(self, samples: np.ndarray) -> np.ndarray:
        self._received += samples.size
        if self._identity:
            return samples.astype(np.float32, copy=True)
        self._buffer = np.concatenate((self._buffer, samples))
        end = self._start + self._buffer.size
        # output n needs input up to floor(n * down / up) + half
        return self._produce(((end - self._half) * self._up + self._down - 1) // self._down)

    def flush(self) -> np.ndarray:
        """The last output samples, their taps past the end reading zeros."""
        if self._identity:
            return np.empty(0, np.float32)
        self._buffer = np.concatenate((self._buffer, np.zeros(self._half + 1, np.float32)))
        return self._produce((self._received * self._up + self._down - 1) // self._down)

    def _produce(self, stop: int) -> np.ndarray:
        count = max(0, stop - self._next)
        out = np.empty(count, np.float32)
        polyphase(self._buffer, self._start, self._table, self._up, self._down, self._next, out)
        self._next += count
        keep_from = self._next * self._down // self._up - self._half + 1
        if keep_from > self._start:
            self._buffer = self._buffer[keep_from - self._start :]
            self._start = keep_from
        return out


@njit(cache=True, nogil=True, fastmath=True)
def polyphase(
    buffer: np.ndarray, start: int, table: np.ndarray, up: int, down: int, first: int, out: np.ndarray
) -> None:
    """out[i] = output sample n = first + i, at input position n * down / up: the taps of its phase
    (`table` rows, phase = the position's fraction rounded down to 1 / len(table)) over the input samples
    from floor(position) - taps / 2 + 1 on. `buffer[0]` is input sample number `start`."""
    phases, taps = table.shape
    lead = taps // 2 - 1 + start
    for i in range(out.size):
        position = (first + i) * down
        whole = position // up
        row = table[(position - whole * up) * phases // up]
        window = buffer[whole - lead : whole - lead + taps]
        acc = np.float32(0.0)
        for j in range(taps):
            acc += row[j] * window[j]
        out[i] = acc


def polyphase_reference(
    buffer: np.ndarray, start: int, table: np.ndarray, up: int, down: int, first: int, count: int
) -> np.ndarray:
    phases, taps = table.shape
    n = first + np.arange(count, dtype=np.int64)
    whole = n * down // up
    rows = table[(n * down - whole * up) * phases // up]
    index = whole[:, None] - (taps // 2 - 1) - start + np.arange(taps)[None, :]
    return (rows.astype(np.float64) * buffer[index]).sum(axis=1).astype(np.float32)
