"""The pipeline, stage by stage: decode -> spectrogram -> peaks -> pairs -> hashes.

`fingerprint_audio` streams a file of any length in `chunk_seconds` pieces (bounded memory);
`hashes_from_peaks` re-hashes a query's peaks under a speed or tempo hypothesis without re-analysing audio.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from tunescout.engine import arrays, decode, hashes, kernels
from tunescout.engine.pairs import Triplets, pair_peaks, triplets
from tunescout.engine.params import DEFAULT_PARAMS, FingerprintParams
from tunescout.engine.peaks import PeakPicker, Peaks, Role, analysis_bins
from tunescout.engine.spectrogram import SpectrogramStream


@dataclass(frozen=True)
class Fingerprint:
    """Parallel arrays: each hash with the frame offset of its anchor peak."""

    hashes: np.ndarray  # uint32
    offsets: np.ndarray  # int32, frames

    def __len__(self) -> int:
        return int(self.hashes.size)


@dataclass(frozen=True)
class AudioPeaks:
    """A decoded upload's peaks: all a query needs (the matcher hashes them under each hypothesis)."""

    peaks: Peaks
    file_sha1: str  # SHA-1 of the decoded PCM (see decode.PcmStream.sha1)
    duration_s: float
    sample_rate_hz: int


@dataclass(frozen=True)
class AudioFingerprint(AudioPeaks):
    """A decoded upload's peaks and the hashes formed from them."""

    fingerprint: Fingerprint


def extract_peaks(pcm_chunks: Iterable[np.ndarray], params: FingerprintParams, role: Role) -> Peaks:
    """Peaks of a PCM stream, holding at most one chunk of PCM and spectrogram at a time."""
    spectrogram = SpectrogramStream(params, bins=analysis_bins(params))
    picker = PeakPicker(params, role)
    for chunk in pcm_chunks:
        picker.push(spectrogram.push(chunk))
    picker.push(spectrogram.flush())
    return picker.finish()


def hashes_from_peaks(
    peaks: Peaks,
    params: FingerprintParams,
    role: Role,
    *,
    speed: float = 1.0,
    tempo: float = 1.0,
    landmarks: Triplets | None = None,
) -> Fingerprint:
    """Hash the peaks' triplets. Hypotheses (queries only): `speed` = the clip plays this much faster than
    the track, pitch included (a tape or DJ deck); `tempo` = faster with the pitch kept. Offsets come out in
    the track's time. `landmarks` (`pairs.triplets_of(query_pairs(...))`) saves forming them again for
    each hypothesis."""
    hashes.check_layout(params)
    if role is Role.REFERENCE and landmarks is None and len(peaks) > REFERENCE_BLOCK_PEAKS:
        parts = [
            _hash(block, params, role, speed, tempo, _anchored_before(block, params, role, n_anchors))
            for block, n_anchors in _anchor_blocks(peaks, params)
        ]
        return Fingerprint(
            hashes=np.concatenate([f.hashes for f in parts]),
            offsets=np.concatenate([f.offsets for f in parts]),
        )
    if landmarks is None:
        landmarks = triplets(peaks, hashes.freq_to_cell(peaks.freq_hz, params), params, role)
    return _hash(peaks, params, role, speed, tempo, landmarks)


# anchors hashed at a time when a track is stored (about 14 minutes at 40 peaks per second): a 3-hour
# file's triplets and their dedup held 170 MB at once, and glibc kept the heap at that peak
REFERENCE_BLOCK_PEAKS = 1 << 15


def _anchor_blocks(peaks: Peaks, params: FingerprintParams) -> Iterator[tuple[Peaks, int]]:
    """Runs of about `REFERENCE_BLOCK_PEAKS` peaks, each cut between two frames and extended by the peaks
    its anchors' target zones reach; with the number of its anchors (its first peaks). Landmarks of an
    anchor depend only on its zone, and a duplicate (hash, offset) comes from anchors of one frame: hashing
    block by block gives the rows of hashing all at once, sorted block by block."""
    t = peaks.t
    start = 0
    while start < t.size:
        stop = t.size
        if start + REFERENCE_BLOCK_PEAKS < t.size:
            stop = int(np.searchsorted(t, t[start + REFERENCE_BLOCK_PEAKS], side="left"))
            if stop == start:  # one frame holds a whole block's peaks: impossible with sane params
                stop = int(np.searchsorted(t, t[start], side="right"))
        reach = int(np.searchsorted(t, t[stop - 1] + params.pair_dt_max, side="right"))
        block = Peaks(
            t=t[start:reach],
            freq_hz=peaks.freq_hz[start:reach],
            magnitude=peaks.magnitude[start:reach],
            n_frames=peaks.n_frames,
        )
        yield block, stop - start
        start = stop


def _anchored_before(block: Peaks, params: FingerprintParams, role: Role, n_anchors: int) -> Triplets:
    """The block's triplets whose anchor is one of its first `n_anchors` peaks."""
    landmarks = triplets(block, hashes.freq_to_cell(block.freq_hz, params), params, role)
    keep = landmarks.anchor < n_anchors
    return Triplets(landmarks.anchor[keep], landmarks.first[keep], landmarks.second[keep])


def _hash(
    peaks: Peaks, params: FingerprintParams, role: Role, speed: float, tempo: float, landmarks: Triplets
) -> Fingerprint:
    cells = hashes.freq_to_cell(peaks.freq_hz / speed, params)
    h, off = kernels.hash_triplets(
        peaks.t,
        cells,
        landmarks.anchor,
        landmarks.first,
        landmarks.second,
        float(speed * tempo),
        params.pair_dt_min,
        params.pair_dt_max,
        params.pair_df_max_cells,
        hashes.KERNEL_LAYOUT,
    )
    del landmarks, cells  # the triplets (12 bytes each) are freed before the dedup below peaks in memory
    if role is Role.REFERENCE:
        # the same landmark twice adds nothing to a track's evidence
        key = arrays.unique((h.astype(np.uint64) << np.uint64(32)) | off.astype(np.uint32).astype(np.uint64))
        h = (key >> np.uint64(32)).astype(np.uint32)
        off = (key & np.uint64(0xFFFFFFFF)).astype(np.int32)
    return Fingerprint(hashes=h, offsets=off)


def query_pairs(peaks: Peaks, params: FingerprintParams) -> tuple[np.ndarray, np.ndarray]:
    """A query's (anchor, target) pairs (see `pairs.pair_peaks`), formed once for all its speed/tempo
    hypotheses and narrower fan-outs."""
    return pair_peaks(peaks, hashes.freq_to_cell(peaks.freq_hz, params), params, Role.QUERY)


def fingerprint_pcm(
    pcm: np.ndarray, params: FingerprintParams = DEFAULT_PARAMS, role: Role = Role.REFERENCE
) -> Fingerprint:
    """Fingerprint of mono float32 PCM at params.sample_rate_hz."""
    chunk = int(params.chunk_seconds * params.sample_rate_hz)
    peaks = extract_peaks((pcm[i : i + chunk] for i in range(0, max(len(pcm), 1), chunk)), params, role)
    return hashes_from_peaks(peaks, params, role)


def analyse_audio(
    source: bytes | str | os.PathLike[str] | BinaryIO,
    params: FingerprintParams = DEFAULT_PARAMS,
    role: Role = Role.QUERY,
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
) -> AudioPeaks:
    """Decode (any format ffmpeg reads) and find the peaks, streaming. Raises `errors.AudioError`
    subclasses. A query stops here: forming its hashes is the matcher's work, per hypothesis."""
    chunk_samples = int(params.chunk_seconds * params.sample_rate_hz)
    stream = decode.open_audio(
        source,
        sample_rate_hz=params.sample_rate_hz,
        start_s=start_s,
        duration_s=duration_s,
        min_duration_s=params.min_clip_seconds,
        chunk_samples=chunk_samples,
    )
    with stream, decode.ReadAhead(stream, chunk_samples=chunk_samples) as chunks:
        peaks = extract_peaks(chunks, params, role)
    return AudioPeaks(
        peaks=peaks,
        file_sha1=stream.sha1,
        duration_s=stream.duration_s,
        sample_rate_hz=params.sample_rate_hz,
    )


def fingerprint_audio(
    source: bytes | str | os.PathLike[str] | BinaryIO,
    params: FingerprintParams = DEFAULT_PARAMS,
    role: Role = Role.REFERENCE,
    *,
    start_s: float = 0.0,
    duration_s: float | None = None,
) -> AudioFingerprint:
    """`analyse_audio`, then the hashes of its peaks."""
    audio = analyse_audio(source, params, role, start_s=start_s, duration_s=duration_s)
    return AudioFingerprint(
        peaks=audio.peaks,
        file_sha1=audio.file_sha1,
        duration_s=audio.duration_s,
        sample_rate_hz=audio.sample_rate_hz,
        fingerprint=hashes_from_peaks(audio.peaks, params, role),
    )
