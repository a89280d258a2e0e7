"""The shipped test clips, fingerprinted once per process, and query peaks cut from them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from tunescout.common import wire
from tunescout.engine import verify
from tunescout.engine.fingerprint import AudioFingerprint, fingerprint_audio
from tunescout.engine.params import DEFAULT_PARAMS, FINGERPRINT_VERSION
from tunescout.engine.peaks import Role
from tunescout.matcher.v1 import matcher_pb2 as pb

DATA = Path(__file__).resolve().parents[1] / "data"
NAMES = ["battle-epic", "breaking_the_chains", "elvish-theme", "knolls"]


@cache
def reference(name: str) -> AudioFingerprint:
    return fingerprint_audio(DATA / f"{name}.opus", role=Role.REFERENCE)


def ingest_request(name: str, **meta: object) -> pb.IngestRequest:
    fp = reference(name)
    return pb.IngestRequest(
        metadata=pb.TrackMetadata(file_sha1=fp.file_sha1, title=name, duration_s=fp.duration_s, **meta),
        hashes_u32le=wire.to_bytes(fp.fingerprint.hashes, wire.U32),
        offsets_frames_i32le=wire.to_bytes(fp.fingerprint.offsets, wire.I32),
        fingerprint_version=FINGERPRINT_VERSION,
        peaks=verify.encode(fp.peaks, DEFAULT_PARAMS),
    )


def match_request(name: str, start_s: float, duration_s: float) -> pb.MatchRequest:
    peaks = fingerprint_audio(
        DATA / f"{name}.opus", role=Role.QUERY, start_s=start_s, duration_s=duration_s
    ).peaks
    import numpy as np

    return pb.MatchRequest(
        frames_i32le=wire.to_bytes(peaks.t, wire.I32),
        freq_hz_f64le=wire.to_bytes(peaks.freq_hz, wire.F64),
        magnitude_f32le=wire.to_bytes(peaks.magnitude, np.dtype("<f4")),
        n_frames=peaks.n_frames,
        fingerprint_version=FINGERPRINT_VERSION,
    )
