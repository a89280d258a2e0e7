"""Encoding test media with PyAV's bundled encoders (no external files, no ffmpeg binary)."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SOURCE_RATE_HZ = 44_100
VIDEO_FPS = 5  # a few tiny frames per second: the video track only has to exist


def encode(
    target: Path | io.RawIOBase,
    container_format: str,
    audio_codec: str | None,
    pcm: np.ndarray,
    *,
    video_codec: str | None = None,
    audio_rate_hz: int | None = None,
    source_rate_hz: int = SOURCE_RATE_HZ,
    layout: str = "stereo",
) -> None:
    """Encode (2, n) float32 PCM at `source_rate_hz`, with an optional tiny video track, into `target`;
    `layout` "mono" mixes the two channels down first (for codecs that take one, such as AMR)."""
    if layout == "mono":
        pcm = pcm.mean(axis=0, keepdims=True)
    destination = str(target) if isinstance(target, Path) else target
    with av.open(destination, "w", format=container_format) as out:
        video = None
        if video_codec:
            video = out.add_stream(video_codec, rate=VIDEO_FPS)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            video.codec_context.options = {"threads": "1"}  # a thread pool costs more than 64x48 frames
        audio = None
        if audio_codec:
            audio = out.add_stream(audio_codec, rate=audio_rate_hz or source_rate_hz, layout=layout)
            if audio_codec == "vorbis":  # ffmpeg's own Vorbis encoder is marked experimental
                audio.codec_context.options = {"strict": "-2"}
        hop = 4096  # samples per frame handed to the encoder, which re-frames them itself
        n_video = 0
        for i in range(0, pcm.shape[1], hop):
            if audio is not None:
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(pcm[:, i : i + hop]), format="fltp", layout=layout
                )
                frame.sample_rate, frame.pts, frame.time_base = source_rate_hz, i, Fraction(1, source_rate_hz)
                for packet in audio.encode(frame):
                    out.mux(packet)
            while video is not None and n_video / VIDEO_FPS <= (i + hop) / source_rate_hz:
                image = np.full((48, 64, 3), (n_video * 7) % 255, np.uint8)
                picture = av.VideoFrame.from_ndarray(image, format="rgb24")
                picture.pts = n_video
                for packet in video.encode(picture):
                    out.mux(packet)
                n_video += 1
        for stream in (audio, video):
            if stream is not None:
                for packet in stream.encode(None):
                    out.mux(packet)


def encoded_bytes(
    container_format: str,
    audio_codec: str,
    mono: np.ndarray,
    rate_hz: int,
    *,
    video_codec: str | None = None,
    audio_rate_hz: int | None = None,
) -> bytes:
    """Mono float32 PCM at `rate_hz` encoded into an in-memory file."""
    buffer = io.BytesIO()
    stereo = np.stack([mono, mono]).astype(np.float32)
    encode(
        buffer,
        container_format,
        audio_codec,
        stereo,
        video_codec=video_codec,
        audio_rate_hz=audio_rate_hz,
        source_rate_hz=rate_hz,
    )
    return buffer.getvalue()
