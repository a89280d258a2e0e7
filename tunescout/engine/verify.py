"""Stage 8: check a candidate's offset against the stored track's own peaks.

A triplet hash matches only when all three of its peaks survive in the clip; a single peak needs only
itself. So the clip's peaks that meet one of the track's peaks at a candidate's place are far more
numerous and steadier evidence than its triplets: against the same count at control places of the track
they confirm a weak candidate (`MatchParams.rescue_*`). Between two places of one track that are alike
(a repeat of the passage) they tell little: the counts differ by about 10 % by chance, so a place is
preferred only by a clear margin (`MatchParams.settle_*`). How near counts as meeting is the caller's.

Each stored track keeps its peaks (reference role) as a small blob, about 1.5 bytes a peak (0.2 MB per
hour of audio): frame deltas (uint32) and cells (uint8), zlib-compressed, behind a magic and a format
number that a reader checks.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from tunescout.engine import hashes, kernels
from tunescout.engine.params import FingerprintParams
from tunescout.engine.peaks import Peaks

MAGIC = b"TSPK"
PEAKS_FORMAT = 1  # the layout below; a reader refuses any other
_HEADER = struct.Struct("<4sBI")  # magic, format, number of peaks
SEARCH_FRAMES = 2  # an offset's count is the best of +-this many frames around it


class PeaksFormatError(ValueError):
    """A stored peak blob this version cannot read."""


@dataclass(frozen=True)
class StoredPeaks:
    """A stored track's peaks frame by frame: the cells of frame f are `cell[frame_start[f] :
    frame_start[f + 1]]`."""

    frame_start: np.ndarray  # int64, one per frame plus one
    cell: np.ndarray  # uint8

    def __len__(self) -> int:
        return int(self.cell.size)


def encode(peaks: Peaks, params: FingerprintParams) -> bytes:
    """The blob stored with a track: its peaks inside the band (cells >= 0), in frame order."""
    if params.freq_cells > 256:
        raise ValueError(
            f"stored peaks keep cells in one byte; freq_cells = {params.freq_cells} does not fit"
        )
    cells = hashes.freq_to_cell(peaks.freq_hz, params)
    inside = cells >= 0
    t = peaks.t[inside].astype(np.int64)
    if t.size and (int(t[0]) < 0 or bool((np.diff(t) < 0).any())):
        raise ValueError("peaks must be sorted by frame, from frame 0")
    deltas = np.diff(t, prepend=0).astype("<u4")
    body = deltas.tobytes() + cells[inside].astype(np.uint8).tobytes()
    return _HEADER.pack(MAGIC, PEAKS_FORMAT, int(t.size)) + zlib.compress(body, 6)


def decode(blob: bytes) -> StoredPeaks:
    """A blob of `encode`, frame by frame. Raises `PeaksFormatError` for anything else."""
    if len(blob) < _HEADER.size:
        raise PeaksFormatError(f"stored peaks are {len(blob)} bytes: too short to hold their header")
    magic, version, n = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise PeaksFormatError("stored peaks do not start with the tunescout peaks magic")
    if version != PEAKS_FORMAT:
        raise PeaksFormatError(
            f"stored peaks are format {version}; this version of tunescout reads format {PEAKS_FORMAT} only"
        )
    try:
        body = zlib.decompress(blob[_HEADER.size :])
    except zlib.error as exc:
        raise PeaksFormatError(f"stored peaks are corrupt: {exc}") from exc
    if len(body) != 5 * n:
        raise PeaksFormatError(f"stored peaks hold {len(body)} bytes for {n} peaks (expected {5 * n})")
    t = np.cumsum(np.frombuffer(body, "<u4", count=n), dtype=np.int64)
    cell = np.frombuffer(body, np.uint8, offset=4 * n)
    n_frames = int(t[-1]) + 1 if n else 0
    frame_start = np.zeros(n_frames + 1, np.int64)
    np.cumsum(np.bincount(t, minlength=n_frames), out=frame_start[1:])
    return StoredPeaks(frame_start=frame_start, cell=cell)


def query_cells(
    peaks: Peaks, params: FingerprintParams, speed: float = 1.0, tempo: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A clip's peaks in the track's time and cells under a hypothesis (as `fingerprint.hashes_from_peaks`
    maps them): frames (int64) and cells (int32), peaks outside the band left out."""
    cells = hashes.freq_to_cell(peaks.freq_hz / speed, params)
    inside = cells >= 0
    t = np.round(peaks.t[inside] * float(speed * tempo)).astype(np.int64)
    return t, cells[inside]


def coincidences(
    stored: StoredPeaks,
    query_t: np.ndarray,
    query_cell: np.ndarray,
    offsets: list[int],
    reach: tuple[int, int] = (0, 0),
) -> list[int]:
    """For each offset (the clip's start in the track, in frames): the most query peaks that meet a stored
    peak (within `reach` = (frames, cells) of it) at an offset within +-`SEARCH_FRAMES` of it."""
    if not offsets:
        return []
    span = np.arange(-SEARCH_FRAMES, SEARCH_FRAMES + 1, dtype=np.int64)
    tried = (np.asarray(offsets, np.int64)[:, None] + span[None, :]).reshape(-1)
    counts = kernels.peak_coincidences(
        stored.frame_start, stored.cell, query_t, query_cell, tried, reach[0], reach[1]
    )
    return [int(c) for c in counts.reshape(len(offsets), span.size).max(axis=1)]
