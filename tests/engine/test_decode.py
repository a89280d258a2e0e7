"""Decode stage against ffmpeg's real decoders: every upload format, sources, ranges, errors, memory.

All media are synthesised here and encoded with PyAV's bundled encoders; no external files.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import threading
import tracemalloc
import wave
import zlib
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import SOURCE_RATE_HZ, encode
from tunescout.engine.decode import (
    SEEK_MIN_START_S,
    SPOOL_COPY_BYTES,
    PcmStream,
    ReadAhead,
    decode_all,
    open_audio,
)
from tunescout.engine.errors import (
    AudioError,
    ClipTooShortError,
    EmptyAudioError,
    InvalidRangeError,
    NoAudioStreamError,
    NotAudioError,
    StartBeyondEndError,
    TruncatedAudioError,
)
from tunescout.engine.fingerprint import analyse_audio
from tunescout.engine.params import DEFAULT_PARAMS

RATE_HZ = 8000  # the fingerprint rate
TONE_HZ = 440.0  # the dominant tone of the test signal
SHORT_S = 3.0  # length of the per-format files
LONG_S = 10.0  # length of the files ranges are cut from (long enough to seek)


# -- synthesis and encoding


def stereo_signal(seconds: float, rate_hz: int = SOURCE_RATE_HZ) -> np.ndarray:
    """(2, n) float32: a 440 Hz tone in both channels, a chirp left, a 1 kHz tone right."""
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    tone = 0.4 * np.sin(2 * np.pi * TONE_HZ * t)
    chirp = 0.2 * np.sin(2 * np.pi * (200 + 150 * t) * t)
    left = tone + chirp
    right = tone + 0.1 * np.sin(2 * np.pi * 1000 * t)
    return np.stack([left, right]).astype(np.float32)


# name -> (file suffix, container format, audio codec, video codec, audio rate)
FORMATS: dict[str, tuple[str, str, str, str | None, int | None]] = {
    "wav": (".wav", "wav", "pcm_s16le", None, None),
    "flac": (".flac", "flac", "flac", None, None),
    "ogg-vorbis": (".ogg", "ogg", "vorbis", None, None),
    "ogg-opus": (".opus", "ogg", "libopus", None, 48_000),
    "webm-opus": (".webm", "webm", "libopus", None, 48_000),
    "m4a-aac": (".m4a", "ipod", "aac", None, None),
    "mp3": (".mp3", "mp3", "libmp3lame", None, None),
    "mp4-h264-aac": (".mp4", "mp4", "aac", "libx264", None),
    "webm-vp8-opus": (".webm", "webm", "libopus", "libvpx", 48_000),
    "3gp-amr": (".3gp", "3gp", "libopencore_amrnb", None, 8_000),  # a phone's voice recorder, mono
}
MONO = ("3gp-amr",)
LOSSLESS = ("wav", "flac")


def write_format(directory: Path, name: str, seconds: float) -> Path:
    suffix, container_format, audio_codec, video_codec, rate = FORMATS[name]
    path = directory / f"{name}-{seconds:g}s{suffix}"
    encode(
        path,
        container_format,
        audio_codec,
        stereo_signal(seconds),
        video_codec=video_codec,
        audio_rate_hz=rate,
        layout="mono" if name in MONO else "stereo",
    )
    return path


@pytest.fixture(scope="module")
def short_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("short")
    return {name: write_format(directory, name, SHORT_S) for name in FORMATS}


@pytest.fixture(scope="module")
def long_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("long")
    return {name: write_format(directory, name, LONG_S) for name in FORMATS}


class NonSeekable(io.RawIOBase):
    """An upload body: read() only, and it records the largest read asked for."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        self.largest_read = max(self.largest_read, size if size >= 0 else 1 << 62)
        return self._inner.read(size)


class CountingReader(io.RawIOBase):
    """A seekable file that counts the bytes read from it."""

    def __init__(self, path: Path) -> None:
        self._inner = path.open("rb")
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        self._inner.close()
        super().close()


def dominant_hz(pcm: np.ndarray, rate_hz: int = RATE_HZ) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / rate_hz)[spectrum.argmax()])


def best_lag(part: np.ndarray, reference: np.ndarray, max_lag: int = 24) -> tuple[int, float]:
    """(lag, correlation): part[k] best matches reference[k - lag]."""
    core = reference[max_lag : reference.size - max_lag]
    scores = []
    for lag in range(-max_lag, max_lag + 1):
        shifted = part[max_lag + lag : part.size - max_lag + lag]
        scores.append(float(np.dot(shifted, core) / math.sqrt(np.dot(shifted, shifted) * np.dot(core, core))))
    best = int(np.argmax(scores))
    return best - max_lag, scores[best]


def pcm16_sha1(pcm: np.ndarray) -> str:
    return hashlib.sha1(np.rint(np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()).hexdigest()


# -- every format


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_decodes_to_mono_at_the_rate_with_its_tone(
    short_files: dict[str, Path], name: str
) -> None:
    with av.open(str(short_files[name])) as container:  # the file is what its name says
        assert len(container.streams.video) == (1 if FORMATS[name][3] else 0)
    pcm, sha1 = decode_all(short_files[name], sample_rate_hz=RATE_HZ)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    # AAC keeps its final padding frame (+23 ms); everything else is within a few ms
    assert pcm.size / RATE_HZ == pytest.approx(SHORT_S, abs=0.03)
    assert dominant_hz(pcm) == pytest.approx(TONE_HZ, abs=3)
    assert np.abs(pcm).max() <= 1.0
    assert sha1 == pcm16_sha1(pcm)


def test_browser_blob_without_extension_duration_or_index() -> None:
    """MediaRecorder's WebM/Opus: written as a live stream (no cues, no duration), sent as bare bytes."""

    class LiveSink(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def write(self, chunk: bytes) -> int:  # type: ignore[override]
            self.data += chunk
            return len(chunk)

    sink = LiveSink()
    encode(sink, "webm", "libopus", stereo_signal(LONG_S), audio_rate_hz=48_000)
    blob = bytes(sink.data)
    with av.open(io.BytesIO(blob)) as container:
        assert container.duration is None  # really a live-style blob
    whole, _ = decode_all(blob, sample_rate_hz=RATE_HZ)
    assert whole.size / RATE_HZ == pytest.approx(LONG_S, abs=0.01)
    part, _ = decode_all(NonSeekable(blob), sample_rate_hz=RATE_HZ, start_s=8.25, duration_s=1.0)
    first = round(8.25 * RATE_HZ)
    lag, correlation = best_lag(part, whole[first : first + part.size])
    assert abs(lag) <= RATE_HZ // 1000 + 1 and correlation > 0.99  # Matroska stores ms timestamps


def test_stereo_downmix_keeps_full_scale_within_one() -> None:
    t = np.arange(SOURCE_RATE_HZ) / SOURCE_RATE_HZ
    same = np.tile(0.9 * np.sin(2 * np.pi * TONE_HZ * t), (2, 1)).astype(np.float32)
    buffer = io.BytesIO()
    encode(buffer, "wav", "pcm_s16le", same)
    pcm, _ = decode_all(buffer.getvalue(), sample_rate_hz=RATE_HZ)
    # ffmpeg's default -3 dB downmix would give 0.9 * 1.414 = 1.27 here
    assert np.abs(pcm).max() == pytest.approx(0.9, abs=0.01)


def test_metadata_that_is_not_utf8_does_not_stop_decoding() -> None:
    fmt = struct.pack("<HHIIHH", 1, 1, RATE_HZ, 2 * RATE_HZ, 2, 16)
    samples = (np.sin(np.arange(RATE_HZ) * 2 * np.pi * TONE_HZ / RATE_HZ) * 10_000).astype("<i2").tobytes()
    info = b"INFO" + b"INAM" + struct.pack("<I", 6) + b"Caf\xe9\x00\x00"  # Latin-1 title
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += (
        b"LIST" + struct.pack("<I", len(info)) + info + b"data" + struct.pack("<I", len(samples)) + samples
    )
    pcm, _ = decode_all(b"RIFF" + struct.pack("<I", len(body)) + body, sample_rate_hz=RATE_HZ)
    assert pcm.size == RATE_HZ


# -- sources


@pytest.mark.parametrize("name", LOSSLESS)
def test_bytes_path_file_and_stream_give_the_same_pcm(short_files: dict[str, Path], name: str) -> None:
    path = short_files[name]
    data = path.read_bytes()
    stream = NonSeekable(data)
    with path.open("rb") as file:
        sources = [data, bytearray(data), memoryview(data), str(path), path, file, stream]
        hashes = {decode_all(source, sample_rate_hz=RATE_HZ)[1] for source in sources}
        assert not file.closed  # the caller's file stays the caller's
    assert len(hashes) == 1
    assert stream.largest_read <= SPOOL_COPY_BYTES  # spooled in pieces, never read whole


def test_same_audio_twice_gives_the_same_sha1(short_files: dict[str, Path]) -> None:
    first = decode_all(short_files["mp3"], sample_rate_hz=RATE_HZ)[1]
    assert decode_all(short_files["mp3"].read_bytes(), sample_rate_hz=RATE_HZ)[1] == first
    assert decode_all(short_files["mp3"], sample_rate_hz=16_000)[1] != first


def test_path_with_a_colon_is_a_file_not_a_url(short_files: dict[str, Path], tmp_path: Path) -> None:
    odd = tmp_path / "concat:artist - song.wav"
    odd.write_bytes(short_files["wav"].read_bytes())
    assert decode_all(odd, sample_rate_hz=RATE_HZ)[0].size == SHORT_S * RATE_HZ


# -- ranges


@pytest.mark.parametrize("name", LOSSLESS)
@pytest.mark.parametrize("start_s", [0.7, 8.3456, LONG_S - 0.6])
def test_lossless_range_matches_slicing_the_full_decode(
    long_files: dict[str, Path], name: str, start_s: float
) -> None:
    whole, _ = decode_all(long_files[name], sample_rate_hz=RATE_HZ)
    part, sha1 = decode_all(long_files[name], sample_rate_hz=RATE_HZ, start_s=start_s, duration_s=0.5)
    first = round(start_s * RATE_HZ)
    reference = whole[first : first + part.size]
    assert part.size == 0.5 * RATE_HZ
    # seeked or decoded from 0 (start below SEEK_MIN_START_S), the samples are the very same
    np.testing.assert_array_equal(part, reference)
    assert sha1 == pcm16_sha1(part)


@pytest.mark.parametrize("name", [name for name in FORMATS if name not in LOSSLESS])
def test_lossy_range_is_within_a_millisecond(long_files: dict[str, Path], name: str) -> None:
    whole, _ = decode_all(long_files[name], sample_rate_hz=RATE_HZ)
    start_s = 8.3456
    assert start_s >= SEEK_MIN_START_S
    part, _ = decode_all(long_files[name], sample_rate_hz=RATE_HZ, start_s=start_s, duration_s=1.0)
    first = round(start_s * RATE_HZ)
    lag, correlation = best_lag(part, whole[first : first + part.size])
    # Matroska/WebM timestamps are whole ms (and ffmpeg rounds Opus's codec delay): +-1 ms there
    assert abs(lag) <= (RATE_HZ // 1000 if "webm" in name else 0)
    assert correlation > 0.99


def test_duration_runs_to_the_end_when_longer_than_the_audio(short_files: dict[str, Path]) -> None:
    pcm, _ = decode_all(short_files["wav"], sample_rate_hz=RATE_HZ, start_s=1.0, duration_s=100.0)
    assert pcm.size == (SHORT_S - 1.0) * RATE_HZ


@pytest.fixture(scope="module")
def minute_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("minute") / "minute.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(SOURCE_RATE_HZ)
        second = (stereo_signal(1.0).T * 32767).astype("<i2").tobytes()
        for _ in range(60):
            out.writeframes(second)
    return path


@pytest.mark.parametrize("start_s", [0.0, 30.0])
def test_a_short_range_reads_a_small_part_of_a_long_file(minute_wav: Path, start_s: float) -> None:
    reader = CountingReader(minute_wav)
    with reader:
        pcm, _ = decode_all(reader, sample_rate_hz=RATE_HZ, start_s=start_s, duration_s=1.0)
    assert pcm.size == RATE_HZ
    # ffmpeg probes about 5 s at open, then reads only around the range: 1.5 s after a seek
    assert reader.bytes_read < 0.15 * minute_wav.stat().st_size


# -- streaming and memory


def test_ten_minutes_stream_in_bounded_chunks(tmp_path: Path) -> None:
    rate_hz, seconds, chunk_samples = RATE_HZ, 600, 80_000
    path = tmp_path / "ten-minutes.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        t = np.arange(10 * rate_hz) / rate_hz
        ten_seconds = (0.5 * np.sin(2 * np.pi * TONE_HZ * t) * 32767).astype("<i2").tobytes()
        for _ in range(seconds // 10):
            out.writeframes(ten_seconds)
    sizes = []
    tracemalloc.start()
    try:
        with open_audio(path, sample_rate_hz=RATE_HZ, chunk_samples=chunk_samples) as stream:
            for chunk in stream:
                sizes.append(chunk.size)
                del chunk
            _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(sizes) == seconds * RATE_HZ == stream.n_samples
    assert max(sizes) == chunk_samples and all(size == chunk_samples for size in sizes[:-1])
    assert stream.duration_s == seconds
    # the whole PCM would be 19.2 MB; a few chunks of 320 kB is all a stream may hold
    assert peak_bytes < 8 * chunk_samples * 4


def test_stream_counts_hashes_and_iterates_once(short_files: dict[str, Path]) -> None:
    stream = open_audio(short_files["flac"], sample_rate_hz=RATE_HZ, chunk_samples=5000)
    assert isinstance(stream, PcmStream) and stream.sample_rate_hz == RATE_HZ
    with pytest.raises(RuntimeError):
        _ = stream.sha1  # not before the end
    chunks = list(stream)
    assert [chunk.size for chunk in chunks] == [5000] * 4 + [4000]
    assert stream.n_samples == 24_000 and stream.duration_s == SHORT_S
    assert stream.sha1 == pcm16_sha1(np.concatenate(chunks))
    with pytest.raises(RuntimeError):
        iter(stream)
    stream.close()
    stream.close()


def test_closing_early_stops_decoding(short_files: dict[str, Path]) -> None:
    with open_audio(short_files["mp3"], sample_rate_hz=RATE_HZ, chunk_samples=1000) as stream:
        iterator = iter(stream)
        next(iterator)
    assert stream.n_samples == 1000
    with pytest.raises(RuntimeError):
        _ = stream.sha1
    assert list(iterator) == []


def test_read_ahead_gives_the_stream_chunks_in_order_and_the_same_sha1(short_files: dict[str, Path]) -> None:
    with open_audio(short_files["mp3"], sample_rate_hz=RATE_HZ, chunk_samples=1000) as stream:
        with ReadAhead(stream, chunk_samples=1000) as chunks:
            got = list(chunks)
        assert chunks.threaded
        assert stream.sha1 == decode_all(short_files["mp3"], sample_rate_hz=RATE_HZ)[1]
    np.testing.assert_array_equal(
        np.concatenate(got), decode_all(short_files["mp3"], sample_rate_hz=RATE_HZ)[0]
    )
    assert len(got) == math.ceil(SHORT_S * RATE_HZ / 1000)


def test_a_clip_of_one_chunk_is_read_without_a_thread_and_still_checked(short_files: dict[str, Path]) -> None:
    whole = decode_all(short_files["mp3"], sample_rate_hz=RATE_HZ)[0]
    chunk = int(SHORT_S * RATE_HZ) + 1000  # longer than the clip: one short chunk
    with open_audio(short_files["mp3"], sample_rate_hz=RATE_HZ, chunk_samples=chunk) as stream:
        with ReadAhead(stream, chunk_samples=chunk) as read_ahead:
            got = list(read_ahead)
        assert not read_ahead.threaded
        assert stream.sha1 == pcm16_sha1(whole)
    np.testing.assert_array_equal(np.concatenate(got), whole)
    # the checks made at the end of the stream still run: too short for the minimum asked
    with open_audio(
        short_files["mp3"], sample_rate_hz=RATE_HZ, chunk_samples=chunk, min_duration_s=SHORT_S + 1
    ) as stream:
        with ReadAhead(stream, chunk_samples=chunk) as read_ahead, pytest.raises(ClipTooShortError):
            list(read_ahead)


def test_read_ahead_raises_the_error_after_the_chunks_before_it() -> None:
    def source():
        yield np.zeros(3, np.float32)
        yield np.ones(3, np.float32)
        raise TruncatedAudioError("cut short")

    got = []
    with ReadAhead(source()) as chunks, pytest.raises(TruncatedAudioError, match="cut short"):
        for chunk in chunks:
            got.append(chunk)
    assert [c.tolist() for c in got] == [[0.0] * 3, [1.0] * 3]


def test_leaving_a_read_ahead_early_stops_its_thread() -> None:
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield np.zeros(1, np.float32)

    read_ahead = ReadAhead(endless(), depth=2)
    with read_ahead as chunks:
        for i, _ in enumerate(chunks):
            if i == 2:
                break
    assert not read_ahead._thread.is_alive()
    assert len(produced) <= 3 + 2 + 1  # the three read, the two queued, the one being put when it stopped
    with pytest.raises(ValueError, match="depth"):
        ReadAhead([], depth=0)


# -- errors


def png_bytes() -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    rows = b"".join(b"\x00" + bytes(range(48)) for _ in range(16))
    header = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        b"Dear customer,\nthis is a plain text file, not a song.\n" * 40,
        png_bytes(),
        b"#EXTM3U\n#EXTINF:3.0,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n",
    ],
    ids=["random", "text", "png", "hls-playlist"],
)
def test_bytes_that_are_not_media_are_refused_at_open(data: bytes) -> None:
    with pytest.raises(NotAudioError, match="send an audio file"):
        open_audio(data, sample_rate_hz=RATE_HZ)


@pytest.mark.parametrize(
    "source", [b"", bytearray(), "empty-file", "empty-stream"], ids=["bytes", "bytearray", "file", "stream"]
)
def test_zero_bytes_are_empty(source: object, tmp_path: Path) -> None:
    if source == "empty-file":
        source = tmp_path / "empty.mp3"
        source.write_bytes(b"")
    elif source == "empty-stream":
        source = NonSeekable(b"")
    with pytest.raises(EmptyAudioError, match="0 bytes"):
        open_audio(source, sample_rate_hz=RATE_HZ)  # type: ignore[arg-type]


def test_video_without_sound_has_no_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "silent-film.mp4"
    encode(path, "mp4", None, stereo_signal(1.0), video_codec="mpeg4")
    with pytest.raises(NoAudioStreamError, match="a video without sound"):
        open_audio(path, sample_rate_hz=RATE_HZ)


@pytest.mark.parametrize("name", ["mp3", "flac", "m4a-aac", "ogg-opus", "webm-opus"])
def test_first_hundred_bytes_are_truncated(short_files: dict[str, Path], name: str) -> None:
    with pytest.raises(TruncatedAudioError, match="cut short or corrupt"):
        decode_all(short_files[name].read_bytes()[:100], sample_rate_hz=RATE_HZ)


def test_mp4_without_its_moov_atom_is_truncated_at_open(short_files: dict[str, Path]) -> None:
    data = short_files["mp4-h264-aac"].read_bytes()
    assert data.find(b"moov") > len(data) // 2  # PyAV writes the index last, as phones do
    with pytest.raises(TruncatedAudioError, match="moov"):
        open_audio(data[: len(data) // 2], sample_rate_hz=RATE_HZ)


def test_corruption_inside_the_stream_raises_after_the_good_chunks(long_files: dict[str, Path]) -> None:
    data = bytearray(long_files["mp3"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    chunks = []
    with open_audio(bytes(data), sample_rate_hz=RATE_HZ, chunk_samples=RATE_HZ) as stream:
        with pytest.raises(TruncatedAudioError, match=r"corrupt at \d+\.\d+ s"):
            for chunk in stream:
                chunks.append(chunk)
        with pytest.raises(RuntimeError):
            _ = stream.sha1
    assert 3 <= len(chunks) < LONG_S


def test_corruption_inside_the_stream_reaches_the_analysis_through_the_read_ahead(
    long_files: dict[str, Path],
) -> None:
    """`analyse_audio` reads a file of several chunks ahead in a thread: the decoder's error in that
    thread is the caller's, and nothing keeps decoding once it is raised."""
    data = bytearray(long_files["mp3"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    params = replace(DEFAULT_PARAMS, chunk_seconds=1.0)
    threads_before = threading.active_count()
    with pytest.raises(TruncatedAudioError, match=r"corrupt at \d+\.\d+ s"):
        analyse_audio(bytes(data), params)
    assert threading.active_count() == threads_before
    assert analyse_audio(long_files["mp3"], params).duration_s == pytest.approx(LONG_S, abs=0.05)


def test_a_file_cut_mid_packet_keeps_its_audio(long_files: dict[str, Path]) -> None:
    """The final packet breaks (FLAC reports it), but only its last frame is lost: tolerated."""
    whole, _ = decode_all(long_files["flac"], sample_rate_hz=RATE_HZ)
    cut, _ = decode_all(long_files["flac"].read_bytes()[:-3], sample_rate_hz=RATE_HZ)
    assert 0 < whole.size - cut.size < 0.2 * RATE_HZ
    np.testing.assert_allclose(cut[: -RATE_HZ // 100], whole[: cut.size - RATE_HZ // 100], atol=1e-6)


def test_a_file_that_breaks_off_long_before_its_declared_length_is_truncated(
    long_files: dict[str, Path],
) -> None:
    data = long_files["flac"].read_bytes()  # STREAMINFO declares 10 s
    with pytest.raises(TruncatedAudioError, match=r"breaks off at \d.* declares 10\.000 s"):
        decode_all(data[: len(data) // 2], sample_rate_hz=RATE_HZ)


def test_a_stream_with_no_samples_is_empty() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:  # a header and a data chunk of 0 bytes
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE_HZ)
    stream = open_audio(buffer.getvalue(), sample_rate_hz=RATE_HZ)
    with pytest.raises(EmptyAudioError, match="no samples"):
        list(stream)


def test_clip_shorter_than_the_minimum(short_files: dict[str, Path]) -> None:
    with pytest.raises(ClipTooShortError, match=r"3\.000 s long, but at least 5 s"):
        decode_all(short_files["ogg-opus"], sample_rate_hz=RATE_HZ, min_duration_s=5.0)
    with pytest.raises(ClipTooShortError, match=r"requested range is 0\.500 s"):
        decode_all(short_files["wav"], sample_rate_hz=RATE_HZ, start_s=2.5, min_duration_s=1.0)
    assert decode_all(short_files["wav"], sample_rate_hz=RATE_HZ, min_duration_s=3.0)[0].size == 24_000


@pytest.mark.parametrize("name", ["wav", "mp3", "webm-opus", "m4a-aac"])
@pytest.mark.parametrize("beyond_s", [0.0, 0.01, 1.9, 50.0])
def test_start_at_or_after_the_end(short_files: dict[str, Path], name: str, beyond_s: float) -> None:
    length_s = decode_all(short_files[name], sample_rate_hz=RATE_HZ)[0].size / RATE_HZ
    if beyond_s == 0.0 and "webm" in name:
        beyond_s = 0.002  # a seek in Matroska is accurate to +-1 ms
    start_s = length_s + beyond_s
    with pytest.raises(
        StartBeyondEndError, match=rf"the start \({start_s:g} s\) .* which is ([\d.]+) s long"
    ) as caught:
        decode_all(short_files[name], sample_rate_hz=RATE_HZ, start_s=start_s)
    reported = re.search(r"which is ([\d.]+) s long", str(caught.value))
    assert reported is not None and float(reported.group(1)) == pytest.approx(length_s, abs=0.02)


@pytest.mark.parametrize(
    ("start_s", "duration_s"),
    [
        (-0.1, None),
        (math.nan, None),
        (math.inf, None),
        (0.0, 0.0),
        (0.0, -1.0),
        (0.0, math.nan),
        (0.0, math.inf),
    ],
)
def test_invalid_ranges_are_refused_at_open(
    short_files: dict[str, Path], start_s: float, duration_s: float
) -> None:
    with pytest.raises(InvalidRangeError, match="finite number of seconds"):
        open_audio(short_files["wav"], sample_rate_hz=RATE_HZ, start_s=start_s, duration_s=duration_s)


def test_every_error_is_an_audio_error() -> None:
    for error in (NotAudioError, TruncatedAudioError, EmptyAudioError, NoAudioStreamError):
        assert issubclass(error, AudioError)
    for error in (ClipTooShortError, StartBeyondEndError, InvalidRangeError):
        assert issubclass(error, AudioError)
