"""Stage 3: log-power spectrogram -> spectral peaks, streamed.

A peak is the maximum of a rectangle of cells around it, inside the analysis band and above a silence floor;
in each block of frames only the strongest few are kept, which fixes the density (peaks per second).
A query uses a smaller rectangle and a higher density than a stored track, so that the peaks a track
stored are found again in a degraded clip of it. Chunked and whole processing give identical peaks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from tunescout.engine import kernels
from tunescout.engine.params import FingerprintParams


class Role(Enum):
    """Which side of the match a fingerprint is for: it sets the peak density and fan-out."""

    REFERENCE = "reference"  # a track being stored
    QUERY = "query"  # a clip being recognised


@dataclass(frozen=True)
class Peaks:
    """Peaks sorted by (frame, bin)."""

    t: np.ndarray  # int32, frame index
    freq_hz: np.ndarray  # float64, interpolated between bins
    magnitude: np.ndarray  # float32, natural log of power
    n_frames: int  # frames the signal spans

    def __len__(self) -> int:
        return int(self.t.size)


def _band_bins(params: FingerprintParams) -> tuple[int, int]:
    bin_hz = params.sample_rate_hz / params.n_fft
    return max(1, math.floor(params.f_min_hz / bin_hz)), min(
        params.n_fft // 2 - 1, math.ceil(params.f_max_hz / bin_hz)
    )


def analysis_bins(params: FingerprintParams) -> tuple[int, int]:
    """The FFT bins (lo, hi), hi exclusive, that peak picking reads for either role: the analysis band
    plus the widest peak rectangle around it (and one bin each side for the interpolation)."""
    k_lo, k_hi = _band_bins(params)
    reach = max(params.ref_peak_freq_radius, params.query_peak_freq_radius, 1)
    return max(0, k_lo - reach), min(params.n_fft // 2 + 1, k_hi + reach + 1)


class PeakPicker:
    """Feed log-power frames with `push` (columns = the bins of `analysis_bins`, as
    `SpectrogramStream(params, bins=analysis_bins(params))` makes them); `finish` returns the peaks of
    everything fed."""

    def __init__(self, params: FingerprintParams, role: Role) -> None:
        self._params = params
        if role is Role.REFERENCE:
            self._rt, self._rf, pps = (
                params.ref_peak_time_radius,
                params.ref_peak_freq_radius,
                params.ref_peaks_per_second,
            )
        else:
            self._rt, self._rf = params.query_peak_time_radius, params.query_peak_freq_radius
            pps = params.query_peaks_per_second
        self._block = params.peak_block_frames
        self._per_block = max(1, round(pps * params.peak_block_frames * params.frame_seconds))
        self._first_bin, last = analysis_bins(params)
        k_lo, k_hi = _band_bins(params)  # in columns of the frames fed:
        self._k_lo, self._k_hi = k_lo - self._first_bin, k_hi - self._first_bin
        full_scale = math.log((params.n_fft / 4) ** 2)  # log power of a full-scale sine's peak bin (Hann)
        self._floor = full_scale + params.peak_floor_db / 10 * math.log(10)
        self._buf = np.empty((0, last - self._first_bin), np.float32)
        self._buf_start = 0  # absolute frame index of self._buf[0]
        self._scanned = 0  # frames before this have been scanned for candidates
        self._cand: list[
            tuple[np.ndarray, np.ndarray, np.ndarray]
        ] = []  # (t, freq, magnitude) not yet ranked
        self._done: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def push(self, frames: np.ndarray) -> None:
        self._buf = np.concatenate((self._buf, frames)) if self._buf.size else np.asarray(frames, np.float32)
        self._scan(self._buf_start + self._buf.shape[0] - self._rt)
        keep_from = max(0, self._scanned - self._rt - self._buf_start)  # left context for the next scan
        self._buf = self._buf[keep_from:]
        self._buf_start += keep_from
        self._rank(final=False)

    def finish(self) -> Peaks:
        n_frames = self._buf_start + self._buf.shape[0]
        self._scan(n_frames)
        self._rank(final=True)
        if self._done:
            t, freq, mag = (np.concatenate(parts) for parts in zip(*self._done, strict=True))
        else:
            t, freq, mag = np.empty(0, np.int32), np.empty(0, np.float64), np.empty(0, np.float32)
        return Peaks(t=t, freq_hz=freq, magnitude=mag, n_frames=n_frames)

    def _scan(self, limit: int) -> None:
        """Find candidate peaks in frames [scanned, limit): their whole rectangle is in the buffer."""
        if limit <= self._scanned:
            return
        buf = self._buf
        t, k = kernels.local_peaks(
            buf,
            self._scanned - self._buf_start,
            limit - self._buf_start,
            self._k_lo,
            self._k_hi,
            self._rt,
            self._rf,
            self._floor,
        )
        self._scanned = limit
        if t.size == 0:
            return
        a, b, c = (
            buf[t, k - 1].astype(np.float64),
            buf[t, k].astype(np.float64),
            buf[t, k + 1].astype(np.float64),
        )
        denom = a - 2 * b + c
        delta = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)
        delta = np.clip(delta, -0.5, 0.5)
        freq = (k + self._first_bin + delta) * (self._params.sample_rate_hz / self._params.n_fft)
        self._cand.append((t + self._buf_start, freq, buf[t, k]))

    def _rank(self, final: bool) -> None:
        """Keep the strongest peaks of every block that can no longer gain candidates."""
        if not self._cand:
            return
        t, freq, mag = (np.concatenate(parts) for parts in zip(*self._cand, strict=True))
        limit = t.size if final else int(np.searchsorted(t, (self._scanned // self._block) * self._block))
        if limit:
            keep = kernels.strongest_per_block(t[:limit], mag[:limit], self._block, self._per_block)
            self._done.append((t[:limit][keep], freq[:limit][keep], mag[:limit][keep]))
        self._cand = [(t[limit:], freq[limit:], mag[limit:])] if limit < t.size else []


def find_peaks(logspec: np.ndarray, params: FingerprintParams, role: Role) -> Peaks:
    """Whole-spectrogram convenience around `PeakPicker` (`logspec` has every FFT bin)."""
    lo, hi = analysis_bins(params)
    picker = PeakPicker(params, role)
    picker.push(logspec[:, lo:hi])
    return picker.finish()
