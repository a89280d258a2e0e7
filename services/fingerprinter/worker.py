"""What runs inside the fingerprinter's worker processes: decode a spooled upload and fingerprint it.

Results travel back as plain bytes and numbers. An AudioError is returned as (reason, message) rather than
raised, so nothing but builtins crosses the process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tunescout.common import wire
from tunescout.common.memory import tune_malloc
from tunescout.engine import verify
from tunescout.engine.errors import AudioError
from tunescout.engine.fingerprint import (
    AudioFingerprint,
    AudioPeaks,
    analyse_audio,
    fingerprint_audio,
    fingerprint_pcm,
)
from tunescout.engine.params import DEFAULT_PARAMS
from tunescout.engine.peaks import Role
from tunescout.engine.resample import PolyphaseResampler


@dataclass(frozen=True)
class WorkerResult:
    file_sha1: str
    duration_s: float
    sample_rate_hz: int
    hashes_u32le: bytes = b""
    offsets_frames_i32le: bytes = b""
    peaks: bytes = b""  # a reference's peaks (engine.verify blob)
    frames_i32le: bytes = b""
    freq_hz_f64le: bytes = b""
    magnitude_f32le: bytes = b""
    n_frames: int = 0


@dataclass(frozen=True)
class WorkerRefusal:
    """The upload is not usable audio: `reason` is an AudioError reason, `message` says why."""

    reason: str
    message: str


def init_worker() -> None:
    """Runs once in each new worker process."""
    tune_malloc()


def warm_up() -> None:
    """Load (or compile) the numba kernels, the resampler's too, once per worker, before an upload waits."""
    rng = np.random.default_rng(0)
    pcm = rng.standard_normal(DEFAULT_PARAMS.sample_rate_hz * 2).astype(np.float32) * 0.1
    fingerprint_pcm(pcm, DEFAULT_PARAMS, Role.REFERENCE)
    fingerprint_pcm(pcm, DEFAULT_PARAMS, Role.QUERY)
    PolyphaseResampler(44_100, DEFAULT_PARAMS.sample_rate_hz).push(np.zeros(44_100, np.float32))


def fingerprint_file(
    path: str, query: bool, start_s: float, duration_s: float | None
) -> WorkerResult | WorkerRefusal:
    try:
        if query:  # peaks only: the matcher forms the hashes, under each speed/tempo hypothesis it tries
            result: AudioPeaks = analyse_audio(
                path, DEFAULT_PARAMS, Role.QUERY, start_s=start_s, duration_s=duration_s
            )
        else:
            result = fingerprint_audio(
                path, DEFAULT_PARAMS, Role.REFERENCE, start_s=start_s, duration_s=duration_s
            )
    except AudioError as exc:
        return WorkerRefusal(reason=exc.reason, message=str(exc))
    common = {
        "file_sha1": result.file_sha1,
        "duration_s": result.duration_s,
        "sample_rate_hz": result.sample_rate_hz,
    }
    if not isinstance(result, AudioFingerprint):
        peaks = result.peaks
        return WorkerResult(
            **common,
            frames_i32le=wire.to_bytes(peaks.t, wire.I32),
            freq_hz_f64le=wire.to_bytes(peaks.freq_hz, wire.F64),
            magnitude_f32le=wire.to_bytes(peaks.magnitude, np.dtype("<f4")),
            n_frames=int(peaks.n_frames),
        )
    fp = result.fingerprint
    return WorkerResult(
        **common,
        hashes_u32le=wire.to_bytes(fp.hashes, wire.U32),
        offsets_frames_i32le=wire.to_bytes(fp.offsets, wire.I32),
        peaks=verify.encode(result.peaks, DEFAULT_PARAMS),
    )
