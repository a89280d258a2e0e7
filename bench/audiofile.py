"""Writing mono float32 PCM to audio files with PyAV (the ffmpeg libraries bundled in the wheel).

Shared by the benchmark scripts; the engine has its own reader (`tunescout.engine.decode`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

PCM16_SCALE = 32767  # float [-1, 1] -> int16


def _frames(
    pcm_chunks: Iterable[np.ndarray], sample_rate_hz: int, sample_format: str
) -> Iterable[av.AudioFrame]:
    pts = 0
    for chunk in pcm_chunks:
        if chunk.size == 0:
            continue
        if sample_format == "s16":
            samples = np.rint(np.clip(chunk, -1.0, 1.0) * PCM16_SCALE).astype(np.int16)
        else:
            samples = np.ascontiguousarray(chunk, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format=sample_format, layout="mono")
        frame.sample_rate = sample_rate_hz
        frame.pts = pts
        pts += samples.size
        yield frame


def write_audio(
    path: str | os.PathLike[str],
    pcm_chunks: Iterable[np.ndarray],
    sample_rate_hz: int,
    *,
    codec: str = "flac",
    container_format: str | None = None,
    bit_rate: int | None = None,
) -> None:
    """Encode mono float32 PCM chunks (in [-1, 1], clipped) into `path`, atomically (written as `.tmp`,
    then renamed). `codec` "flac" stores 16-bit samples; "libopus" takes floats at 48 kHz."""
    final = Path(path)
    tmp = final.with_name(final.name + ".tmp")
    fmt = container_format or {"flac": "flac", "libopus": "ogg"}.get(codec)
    sample_format = "s16" if codec == "flac" else "flt"
    try:
        with av.open(str(tmp), "w", format=fmt) as container:
            stream = container.add_stream(codec, rate=sample_rate_hz)
            stream.layout = "mono"
            stream.format = sample_format
            if bit_rate is not None:
                stream.bit_rate = bit_rate
            for frame in _frames(pcm_chunks, sample_rate_hz, sample_format):
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
