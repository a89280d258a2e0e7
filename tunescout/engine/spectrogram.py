"""Stage 2: PCM -> log-power spectrogram, streamed in chunks.

Frame i covers samples [i * hop, i * hop + n_fft) of the input; the end is zero-padded so the last samples
are covered. Feeding the PCM in any chunking yields exactly the frames of feeding it whole.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from tunescout.engine.params import FingerprintParams

_POWER_EPS = 1e-10  # keeps log() finite on digital silence
BLOCK_FRAMES = 256  # frames transformed at a time (1 MB of windowed frames)


class SpectrogramStream:
    """PCM chunks -> log-power frames (natural log of |STFT|^2, float32, shape (frames, n_bins)).

    `bins` = (lo, hi) keeps only FFT bins lo <= k < hi (column 0 is bin lo): the peak picker reads only
    its band, and the log of the bins outside it would be wasted work. Default: every bin."""

    def __init__(self, params: FingerprintParams, bins: tuple[int, int] | None = None) -> None:
        self._n_fft = params.n_fft
        self._hop = params.hop
        n_bins = params.n_fft // 2 + 1
        self._lo, self._hi = bins if bins is not None else (0, n_bins)
        if not 0 <= self._lo < self._hi <= n_bins:
            raise ValueError(f"bins must satisfy 0 <= lo < hi <= {n_bins}, got {bins}")
        self._window = np.hanning(params.n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
        self._pending = np.empty(0, np.float32)  # samples not yet consumed by a complete frame
        self.frames_out = 0  # index of the next frame to be produced

    @property
    def n_bins(self) -> int:
        return self._hi - self._lo

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Frames completed by this chunk of mono float32 PCM."""
        buf = np.concatenate((self._pending, np.asarray(pcm, np.float32)))
        n_frames = 0 if buf.size < self._n_fft else 1 + (buf.size - self._n_fft) // self._hop
        frames = self._frames(buf, n_frames)
        self._pending = buf[n_frames * self._hop :]
        return frames

    def flush(self) -> np.ndarray:
        """Remaining frames, zero-padding the tail so every sample lies in some frame."""
        if self._pending.size == 0:
            return np.empty((0, self.n_bins), np.float32)
        n_frames = 1 + max(0, self._pending.size - 1) // self._hop
        buf = np.zeros((n_frames - 1) * self._hop + self._n_fft, np.float32)
        buf[: self._pending.size] = self._pending
        self._pending = np.empty(0, np.float32)
        return self._frames(buf, n_frames)

    def _frames(self, buf: np.ndarray, n_frames: int) -> np.ndarray:
        if n_frames == 0:
            return np.empty((0, self.n_bins), np.float32)
        strided = np.lib.stride_tricks.sliding_window_view(buf, self._n_fft)[:: self._hop][:n_frames]
        out = np.empty((n_frames, self.n_bins), np.float32)
        # blocks of frames small enough that the windowed frames and their spectrum stay in the CPU
        # cache between steps (1.7x faster than whole 20 s chunks); scipy's pocketfft is vectorised, 5x
        # faster than numpy.fft on float32 frames
        for i in range(0, n_frames, BLOCK_FRAMES):
            band = scipy.fft.rfft(strided[i : i + BLOCK_FRAMES] * self._window, axis=1)[
                :, self._lo : self._hi
            ]
            power = out[i : i + BLOCK_FRAMES]
            np.square(band.real, out=power)
            power += np.square(band.imag)
            power += np.float32(_POWER_EPS)
            np.log(power, out=power)
        self.frames_out += n_frames
        return out


def log_power_spectrogram(pcm: np.ndarray, params: FingerprintParams) -> np.ndarray:
    """Whole-signal convenience: all frames of `pcm` at once."""
    stream = SpectrogramStream(params)
    return np.concatenate((stream.push(pcm), stream.flush()))
