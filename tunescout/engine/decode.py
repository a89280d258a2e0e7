"""Stage 1: any upload ffmpeg reads -> mono float32 PCM at the fingerprint sample rate, streamed in chunks.

Decoding uses the ffmpeg libraries bundled in PyAV (no system ffmpeg). Only the first audio stream is
demuxed; every other stream (video, cover art, subtitles) is discarded by the demuxer, never decoded.
Audio is downmixed to mono and resampled by `resample.py` (a filter for the fingerprint's band, about 5x
cheaper than ffmpeg's); the downmix is the mean of the channels, so input in [-1, 1] stays in [-1, 1].

Positions: `start_s` and `duration_s` are seconds of the decoded audio, 0 being its first sample. A start
of at least `SEEK_MIN_START_S` seeks the container to `SEEK_PREROLL_S` before it, then trims by frame
timestamps, so a 10 s range of a 2-hour file costs about 10 s of decoding. A seek that fails or lands
after the start falls back to decoding from the beginning. A seeked range is the same samples as the slice
of a full decode wherever the container's timestamps are sample-exact (WAV, FLAC, Ogg, MP4, MP3 in the
tests); Matroska/WebM stores whole milliseconds, so there it is within +-1 ms.

Errors (all `tunescout.engine.errors.AudioError`; no `av.*` exception escapes):
- bytes no demuxer recognises -> NotAudioError, raised by `open_audio`; images count as not audio.
- a file that starts with a known media signature (MP4 `ftyp`, `ID3`, `fLaC`, `OggS`, `RIFF`, EBML...) but
  that ffmpeg cannot open -> TruncatedAudioError, raised by `open_audio` (e.g. an MP4 without its `moov`).
- a valid container without an audio stream -> NoAudioStreamError, raised by `open_audio`.
- the following are raised while iterating, once the chunks before them have been yielded:
  a decode or demux error before any audio decoded -> TruncatedAudioError; a decode or demux error that
  is followed by more packets (corruption inside the stream) -> TruncatedAudioError;
  zero samples with no error -> EmptyAudioError (TruncatedAudioError if the container declared a length);
  nothing left after `start_s` -> StartBeyondEndError; fewer than `min_duration_s` -> ClipTooShortError.

Truncation policy: an error on the final packets only (a file cut mid-packet) is tolerated with a warning,
unless the container declares audio reaching more than `TRUNCATION_SLACK_S` past the break (then
TruncatedAudioError: half a track is never returned as if whole when the file says so); a file cut at a
packet boundary decodes with no error at all, so refusing every final-packet error would not catch cuts,
only make the verdict depend on where the byte cut fell. Corrupt data that ffmpeg's parsers skip without
an error (a FLAC frame, an Ogg page, a WebM cluster) shows only as a timestamp gap: logged, not raised.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, BinaryIO, Final

import av
import av.error
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.stream import Discard

from tunescout.engine.errors import (
    ClipTooShortError,
    EmptyAudioError,
    InvalidRangeError,
    NoAudioStreamError,
    NotAudioError,
    StartBeyondEndError,
    TruncatedAudioError,
)
from tunescout.engine.resample import PolyphaseResampler, mono

logger = logging.getLogger(__name__)

SPOOL_MAX_BYTES: Final = 16 * 1024 * 1024  # bytes of a non-seekable upload held in memory before disk
SPOOL_COPY_BYTES: Final = 1024 * 1024  # bytes copied per read while spooling
SEEK_MIN_START_S: Final = 2.0  # s; a nearer start is reached by decoding from 0 (cheap, always exact)
SEEK_PREROLL_S: Final = 0.5  # s decoded before `start_s` after a seek: MP3 reservoir, AAC/Opus overlap settle
START_TOLERANCE_S: Final = 0.001  # s; a seek landing later than the start by more is redone from 0
TRUNCATION_SLACK_S: Final = 1.0  # s; audio may end this much before the declared length after an error ...
TRUNCATION_SLACK_FRACTION: Final = 0.02  # ... or this fraction of it (declared lengths can be estimates)
GAP_WARN_S: Final = 0.1  # s; a timestamp jump this large means ffmpeg skipped corrupt data: logged
PCM16_SCALE: Final = 32767  # float -> int16 factor of the sha1 definition

# Signatures that identify a media file even when ffmpeg cannot open it: (offset, bytes, what it is).
_MEDIA_SIGNATURES: Final[tuple[tuple[int, bytes, str], ...]] = (
    (4, b"ftyp", "an MP4/M4A/MOV file"),
    (4, b"moov", "an MP4/MOV file"),
    (4, b"mdat", "an MP4/MOV file"),
    (4, b"wide", "a MOV file"),
    (4, b"free", "an MP4/MOV file"),
    (0, b"ID3", "an MP3 file"),
    (0, b"fLaC", "a FLAC file"),
    (0, b"OggS", "an Ogg (Vorbis/Opus) file"),
    (0, b"RIFF", "a WAV file"),
    (0, b"RF64", "a WAV file"),
    (0, b"FORM", "an AIFF file"),
    (0, b"\x1a\x45\xdf\xa3", "a WebM/Matroska file"),
    (0, b"#!AMR", "an AMR file"),
    (0, b"caff", "a CAF file"),
    (0, b"0&\xb2u\x8ef\xcf\x11", "a WMA/ASF file"),
)
_SNIFF_BYTES: Final = 16
# Demuxers that read still images; such an upload is "not audio" rather than "a video without sound".
_IMAGE_FORMATS: Final = frozenset({"image2", "gif", "apng", "ico", "jpegxl_anim", "webp"})
_ACCEPTED_HINT: Final = "send an audio file (MP3, WAV, FLAC, OGG, Opus, M4A/AAC, WebM) or a video with sound"

AudioSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO


class PcmStream:
    """Mono float32 PCM in [-1, 1] at `sample_rate_hz`, decoded lazily in chunks.

    Iterating yields 1-D float32 arrays of exactly `chunk_samples` samples, the last one possibly shorter;
    a stream can be iterated once. Nothing accumulates the whole PCM: memory is one chunk plus ffmpeg's
    buffers, whatever the length of the audio.

    `sha1` is the hex SHA-1 of the yielded PCM as little-endian int16: each sample clipped to [-1, 1],
    multiplied by 32767 and rounded half to even (`numpy.rint`). It is updated as chunks are yielded, so
    the same audio, range and sample rate always give the same value.

    Errors found while decoding (see the module docstring) are raised by the iteration; after one, the
    stream is closed and `sha1` stays unavailable. Close the stream (or use it as a context manager) when
    abandoning it early.
    """

    sample_rate_hz: int  # Hz of the yielded PCM

    def __init__(
        self,
        media: _Media,
        *,
        sample_rate_hz: int,
        start_s: float,
        duration_s: float | None,
        min_duration_s: float,
        chunk_samples: int,
    ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._media = media
        self._start_s = start_s
        self._duration_s = duration_s
        self._min_duration_s = min_duration_s
        # samples of output wanted, None for "to the end"
        self._wanted = None if duration_s is None else max(1, round(duration_s * sample_rate_hz))
        self._buffer = _ChunkBuffer(chunk_samples)
        self._sha1 = hashlib.sha1()
        self._n_samples = 0  # yielded
        self._accepted = 0  # kept for output (yielded or in the chunk buffer)
        self._produced = 0  # resampled samples of the current pass, from its first frame on
        self._skip = 0  # resampled samples still to drop before `start_s`
        self._first_s: float | None = None  # time of the pass's first resampled input, s after the start
        self._input_drop = 0  # input samples still to drop to meet the output grid after a seek
        self._audio_length_s: float | None = None  # known once the end of the audio has been read
        self._generator: Generator[np.ndarray, None, None] | None = None
        self._finished = False
        self._closed = False

    # -- public API

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._generator is not None or self._closed:
            raise RuntimeError("a PcmStream can be iterated once; call open_audio() again to re-read it")
        self._generator = self._generate()
        return self._generator

    @property
    def n_samples(self) -> int:
        """Samples yielded so far; the audio's decoded length once iteration has finished."""
        return self._n_samples

    @property
    def duration_s(self) -> float:
        """Seconds yielded so far (`n_samples / sample_rate_hz`)."""
        return self._n_samples / self.sample_rate_hz

    @property
    def sha1(self) -> str:
        """Hex SHA-1 of the yielded PCM as int16 (see the class docstring); known after a full iteration."""
        if not self._finished:
            raise RuntimeError("PcmStream.sha1 is known only after the stream has been iterated to its end")
        return self._sha1.hexdigest()

    def close(self) -> None:
        """Release the decoder and any spooled copy of the upload; safe to call more than once."""
        self._closed = True
        if self._generator is not None:
            self._generator.close()
        self._media.close()

    def __enter__(self) -> PcmStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- decoding

    def _generate(self) -> Generator[np.ndarray, None, None]:
        try:
            seek = self._start_s >= SEEK_MIN_START_S
            while not (yield from self._decode_pass(seek=seek)):
                seek = False
                self._media.reopen()
            self._check_length()
            tail = self._buffer.drain()
            if tail is not None:
                self._publish(tail)
                yield tail
            self._finished = True
        finally:
            self._media.close()

    def _decode_pass(self, *, seek: bool) -> Generator[np.ndarray, None, bool]:
        """Decode from the beginning or from a seek; False when the seek proved unusable (nothing yielded)."""
        container, stream = self._media.container, self._media.stream
        timeline = self._media.timeline()
        self._produced, self._first_s = 0, None
        if seek:
            target_s = timeline.origin_s + self._start_s - SEEK_PREROLL_S
            try:
                container.seek(round(target_s / timeline.tick_s), stream=stream, backward=True)
            except av.error.FFmpegError as error:
                logger.warning("seek to %.3f s failed (%s); decoding from the beginning", target_s, error)
                return False
        resampler = _MonoResampler(self.sample_rate_hz)
        frames = self._decoded_frames(container, stream, timeline)
        try:
            for decoded in frames:
                if self._first_s is None and not self._place_first_frame(decoded, timeline, seek=seek):
                    return False
                frame = _drop_leading(decoded, self._input_drop) if self._input_drop else decoded
                self._input_drop -= decoded.samples - (frame.samples if frame is not None else 0)
                if frame is None:
                    continue
                for pcm in resampler.convert(frame):
                    if (yield from self._emit(pcm)):
                        return True
        except TruncatedAudioError as error:
            if not seek or self._first_s is not None:
                raise
            # Nothing decoded after the seek: judge the file from its beginning, not from the seek.
            logger.warning("no audio decodes after the seek (%s); decoding from the beginning", error)
            return False
        finally:
            frames.close()
        if self._first_s is None and seek:
            # Nothing after the seek: the start lies beyond the end, or the seek misled us.
            declared_s = self._media.declared_duration_s()
            if declared_s is None or declared_s > self._start_s:
                logger.warning("no audio after seeking to %.3f s; decoding from the beginning", self._start_s)
                return False
            self._audio_length_s = declared_s
            return True
        for pcm in resampler.flush():
            if (yield from self._emit(pcm)):
                return True
        self._audio_length_s = (self._first_s or 0.0) + self._produced / self.sample_rate_hz
        return True

    def _place_first_frame(self, frame: AudioFrame, timeline: _Timeline, *, seek: bool) -> bool:
        """Set where the pass starts and what to drop before `start_s`; False when a seek is unusable.

        After a seek, input samples are dropped up to the next instant where input and output sample
        grids meet (every 1/gcd(rates) s), so the resampler sees its input in the same phase as when
        decoding from 0: lossless ranges come out identical to slices of the full decode.
        """
        if not seek:
            self._first_s, self._input_drop = 0.0, 0
        else:
            landed_s = timeline.seconds(frame.pts)
            if landed_s is None:
                logger.warning("no timestamp on the first frame after a seek; decoding from the beginning")
                return False
            if landed_s > self._start_s + START_TOLERANCE_S:
                logger.warning(
                    "seek landed at %.3f s, after the start %.3f s; decoding from the beginning",
                    landed_s,
                    self._start_s,
                )
                return False
            rate_in = frame.sample_rate
            first_index = round(landed_s * rate_in)
            self._input_drop = -first_index % (rate_in // math.gcd(rate_in, self.sample_rate_hz))
            self._first_s = (first_index + self._input_drop) / rate_in
        self._skip = max(0, round((self._start_s - self._first_s) * self.sample_rate_hz))
        return True

    def _decoded_frames(
        self, container: InputContainer, stream: AudioStream, timeline: _Timeline
    ) -> Generator[AudioFrame, None, None]:
        """Frames of the audio stream, applying the truncation policy of the module docstring."""
        codec = stream.codec_context
        failure: tuple[float | None, str] | None = None  # (position s, ffmpeg's message) of the last error
        end_s: float | None = None  # where the last decoded frame ends, s after the audio's start
        decoded_any = False
        demux_failures = 0
        while demux_failures < 2:
            try:
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue  # PyAV's end-of-stream marker; the decoder is flushed below
                    if failure is not None:
                        raise _corrupt_error(*failure)
                    try:
                        frames = codec.decode(packet)
                    except av.error.FFmpegError as error:
                        position_s = timeline.seconds(packet.pts if packet.pts is not None else packet.dts)
                        if position_s is not None and position_s < self._start_s:
                            # audio before the range is dropped anyway (e.g. no bit reservoir after a seek)
                            logger.debug("ignoring a decode error at %.3f s, before the start", position_s)
                            continue
                        failure = (position_s, _ffmpeg_message(error))
                        continue
                    for frame in frames:
                        end_s = _frame_end_s(frame, timeline, end_s)
                        decoded_any = True
                        yield frame
                break
            except av.error.FFmpegError as error:
                # The demuxer cannot read on here; demux again to learn whether packets follow.
                demux_failures += 1
                if failure is None:
                    failure = (None, _ffmpeg_message(error))
        try:
            for frame in codec.decode(None):
                end_s = _frame_end_s(frame, timeline, end_s)
                decoded_any = True
                yield frame
        except av.error.FFmpegError as error:
            if failure is None:
                failure = (None, _ffmpeg_message(error))
        if failure is not None:
            self._judge_final_failure(failure[1], decoded_any=decoded_any, end_s=end_s)

    def _judge_final_failure(self, message: str, *, decoded_any: bool, end_s: float | None) -> None:
        """An error on the last packets: tolerated, unless nothing decoded or the file promised more."""
        if not decoded_any:
            raise TruncatedAudioError(
                f"the audio stream is cut short or corrupt: nothing decodes ({message}); "
                "upload the complete file, or re-export it"
            )
        declared_s = self._media.declared_duration_s()
        if end_s is not None and declared_s is not None:
            if declared_s - end_s > max(TRUNCATION_SLACK_S, TRUNCATION_SLACK_FRACTION * declared_s):
                raise TruncatedAudioError(
                    f"the audio breaks off at {end_s:.3f} s ({message}) but the file declares "
                    f"{declared_s:.3f} s: it is cut short; upload the complete file"
                )
        logger.warning(
            "the audio ends with an undecodable packet (%s) at %s; keeping the audio before it",
            message,
            "an unknown position" if end_s is None else f"{end_s:.3f} s",
        )

    def _emit(self, pcm: np.ndarray) -> Generator[np.ndarray, None, bool]:
        """Trim resampled PCM to the range and yield the chunks it completes; True once the range is full."""
        self._produced += pcm.size
        if self._skip:
            dropped = min(self._skip, pcm.size)
            pcm = pcm[dropped:]
            self._skip -= dropped
        if self._wanted is not None:
            pcm = pcm[: self._wanted - self._accepted]
        self._accepted += pcm.size
        for chunk in self._buffer.add(pcm):
            self._publish(chunk)
            yield chunk
        return self._wanted is not None and self._accepted >= self._wanted

    def _publish(self, chunk: np.ndarray) -> None:
        self._sha1.update(_pcm16_le(chunk).tobytes())
        self._n_samples += chunk.size

    def _check_length(self) -> None:
        """Raise for a range that holds no audio, or less than the minimum."""
        got_s = self._accepted / self.sample_rate_hz
        if self._accepted == 0:
            length_s = self._audio_length_s
            if self._start_s > 0 and length_s is not None and length_s > 0:
                raise StartBeyondEndError(
                    f"the start ({self._start_s:g} s) is at or after the end of the audio, which is "
                    f"{length_s:.3f} s long; choose a start below {length_s:.3f} s"
                )
            declared_s = self._media.declared_duration_s()
            if declared_s:
                raise TruncatedAudioError(
                    f"the file declares {declared_s:.3f} s of audio but none decodes: it is cut short or "
                    "corrupt; upload the complete file"
                )
            raise EmptyAudioError("the audio stream holds no samples (an empty recording?); record again")
        if got_s < self._min_duration_s:
            where = "" if self._start_s == 0 and self._duration_s is None else " in the requested range"
            raise ClipTooShortError(
                f"the audio{where} is {got_s:.3f} s long, but at least {self._min_duration_s:g} s is "
                "needed to fingerprint or recognise it; send a longer recording"
            )


def open_audio(
    source: AudioSource,
    *,
    sample_rate_hz: int,
    start_s: float = 0.0,
    duration_s: float | None = None,
    min_duration_s: float = 0.0,
    chunk_samples: int = 160_000,
) -> PcmStream:
    """Open `source` for lazy decoding to mono float32 PCM at `sample_rate_hz` (Hz).

    `source` is the upload's bytes, a path, or a binary file object. A seekable file object is read from
    offset 0 (ffmpeg seeks by absolute offset); it stays open, the caller owns it. A non-seekable one (an
    HTTP request body) is first copied to a temporary file, in memory up to `SPOOL_MAX_BYTES`.

    `start_s` (s, >= 0) and `duration_s` (s, > 0; None: to the end) select the range to decode;
    `min_duration_s` (s) is the shortest acceptable result; `chunk_samples` is the chunk length (samples).

    Raises EmptyAudioError, NotAudioError, TruncatedAudioError or NoAudioStreamError when the upload is
    unusable on sight, InvalidRangeError for a bad range; the others arise while iterating.
    """
    _check_range(start_s, duration_s)
    if sample_rate_hz <= 0 or chunk_samples <= 0:
        raise ValueError(
            f"sample_rate_hz and chunk_samples must be > 0, got {sample_rate_hz}/{chunk_samples}"
        )
    if not math.isfinite(min_duration_s) or min_duration_s < 0:
        raise ValueError(f"min_duration_s must be a finite number of seconds >= 0, got {min_duration_s!r}")
    media = _Media(*_readable_file(source))
    try:
        media.reopen()
    except BaseException:
        media.close()
        raise
    return PcmStream(
        media,
        sample_rate_hz=sample_rate_hz,
        start_s=float(start_s),
        duration_s=None if duration_s is None else float(duration_s),
        min_duration_s=float(min_duration_s),
        chunk_samples=chunk_samples,
    )


class ReadAhead:
    """Iterate `chunks` (a `PcmStream`) in a thread of its own, up to `depth` chunks ahead of the consumer.

    ffmpeg's decoders run with the GIL released, as do the spectrogram's FFT and the numba kernels, so a
    file's next chunk decodes while the one before is analysed: 10 tracks fingerprinted in 0.87-0.93x the
    time of decoding them alone instead of 0.75-0.82x. The first chunk is read in the caller's thread; when
    it is shorter than `chunk_samples` it was the only one (a clip), and no thread is started: a 10 s query
    would gain nothing and pay 0.2-0.4 ms for it. Errors raised while iterating reach the consumer after the
    chunks before them, as they would unthreaded. Use it as a context manager inside the stream's own:
    leaving it stops the thread (it finishes the chunk it is decoding) and waits for it, so the stream is
    closed only once nothing reads it.
    """

    _END: Final = object()

    def __init__(self, chunks: Iterable[np.ndarray], depth: int = 2, chunk_samples: int = 0) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._chunks = iter(chunks)
        self._chunk_samples = chunk_samples
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._iterated = False

    @property
    def threaded(self) -> bool:
        """Whether a thread was started (the input ran past its first chunk)."""
        return self._thread is not None

    def _produce(self) -> None:
        item: Any = self._END
        try:
            for chunk in self._chunks:
                if not self._put(chunk):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            item = _Failure(exc)
        self._put(item)

    def _put(self, item: Any) -> bool:
        """Queue `item`, waiting for room; False once the consumer has left."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._iterated:
            raise RuntimeError("a ReadAhead is iterated once")
        self._iterated = True
        first = next(self._chunks, None)
        if first is None:
            return
        yield first
        if self._stop.is_set():
            return
        if first.shape[0] < self._chunk_samples:
            yield from self._chunks  # the short first chunk was the last: the stream ends, its checks made
            return
        self._thread = threading.Thread(target=self._produce, name="decode", daemon=True)
        self._thread.start()
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class _Failure:
    exc: BaseException


def decode_all(
    source: AudioSource,
    *,
    sample_rate_hz: int,
    start_s: float = 0.0,
    duration_s: float | None = None,
    min_duration_s: float = 0.0,
) -> tuple[np.ndarray, str]:
    """Whole (range of the) audio as one float32 array plus its sha1; for clips, not 3-hour files.

    Same arguments and errors as `open_audio`; every error is raised here.
    """
    with open_audio(
        source,
        sample_rate_hz=sample_rate_hz,
        start_s=start_s,
        duration_s=duration_s,
        min_duration_s=min_duration_s,
    ) as stream:
        chunks = list(stream)
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return pcm, stream.sha1


# -- source handling


class _Media:
    """The seekable upload and the container opened on it; reopened to decode again from the start."""

    def __init__(self, file: IO[bytes], owned: bool) -> None:
        self._file = file
        self._owned = owned  # we made the file (spool, BytesIO, opened path): close it with the stream
        self._container: InputContainer | None = None
        self._stream: AudioStream | None = None

    @property
    def container(self) -> InputContainer:
        assert self._container is not None, "container used before open or after close"
        return self._container

    @property
    def stream(self) -> AudioStream:
        assert self._stream is not None, "stream used before open or after close"
        return self._stream

    def timeline(self) -> _Timeline:
        """The audio stream's timestamps; its first sample is at its start_time (0 when not given)."""
        stream = self.stream
        tick_s = float(stream.time_base) if stream.time_base else 1.0 / stream.codec_context.sample_rate
        return _Timeline(tick_s, 0.0 if stream.start_time is None else stream.start_time * tick_s)

    def declared_duration_s(self) -> float | None:
        """Length of the audio in s as the container declares it (may be an estimate), None if unknown."""
        stream = self.stream
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if self.container.duration is not None:
            return self.container.duration / av.time_base
        return None

    def reopen(self) -> None:
        """(Re)open the container at the start of the file: NotAudio/Truncated/NoAudioStream if unusable."""
        self._close_container()
        self._file.seek(0)
        head = self._file.read(_SNIFF_BYTES)
        self._file.seek(0)
        try:
            container = av.open(self._file, mode="r", io_open=_refuse_nested_open, metadata_errors="replace")
        except av.error.FFmpegError as error:
            raise _unreadable_error(head, error) from error
        try:
            self._stream = _first_audio_stream(container)
        except BaseException:
            container.close()
            raise
        self._container = container

    def close(self) -> None:
        self._close_container()
        if self._owned:
            self._file.close()

    def _close_container(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._stream = None, None


def _readable_file(source: AudioSource) -> tuple[IO[bytes], bool]:
    """A seekable binary file over `source` and whether we own it; EmptyAudioError for zero bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise EmptyAudioError("the upload is empty (0 bytes); send the audio file's contents")
        # BytesIO shares a bytes object's memory; bytearray and memoryview are copied once.
        return io.BytesIO(source), True
    if isinstance(source, str | os.PathLike):
        # Opened here rather than handed to ffmpeg, which reads a string as a URL ("concat:", "http:").
        file = open(source, "rb")  # closed with the stream
        if os.fstat(file.fileno()).st_size == 0:
            file.close()
            raise EmptyAudioError(f"the file {os.fspath(source)!r} is empty (0 bytes)")
        return file, True
    if _is_seekable(source):
        size = source.seek(0, io.SEEK_END)
        source.seek(0)
        if size == 0:
            raise EmptyAudioError("the upload is empty (0 bytes); send the audio file's contents")
        return source, False
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES)  # closed with the stream
    try:
        shutil.copyfileobj(source, spool, SPOOL_COPY_BYTES)
        if spool.tell() == 0:
            raise EmptyAudioError("the upload is empty (0 bytes); send the audio file's contents")
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool, True


def _is_seekable(file: BinaryIO) -> bool:
    seekable = getattr(file, "seekable", None)
    return callable(seekable) and bool(seekable()) and hasattr(file, "seek") and hasattr(file, "tell")


def _refuse_nested_open(url: str, flags: int, options: dict[str, Any]) -> Any:
    """An upload (an HLS playlist, a concat list) must never make ffmpeg open other files or URLs."""
    raise PermissionError(f"the upload refers to another file or URL ({url!r}); send the media itself")


def _first_audio_stream(container: InputContainer) -> AudioStream:
    """The first audio stream, every other stream set to be discarded by the demuxer."""
    if not container.streams.audio:
        kinds = sorted({stream.type for stream in container.streams})
        format_name = container.format.name
        if format_name.endswith("_pipe") or format_name in _IMAGE_FORMATS:
            raise NotAudioError(f"the upload is an image ({format_name}), not audio; {_ACCEPTED_HINT}")
        if "video" in kinds:
            raise NoAudioStreamError(
                "no audio stream in the upload (a video without sound?); send a recording that has sound"
            )
        raise NotAudioError(
            f"the upload holds no audio (only {', '.join(kinds) or 'no streams'}); {_ACCEPTED_HINT}"
        )
    audio = container.streams.audio[0]
    if audio.codec_context is None:
        raise NotAudioError(
            f"ffmpeg has no decoder for the audio codec ({audio.name or 'unknown'}); {_ACCEPTED_HINT}"
        )
    for stream in container.streams:
        if stream.index != audio.index:
            stream.discard = Discard.all
    logger.debug(
        "opened %s: audio %s, %s Hz, %s channels",
        container.format.name,
        audio.codec_context.name,
        audio.codec_context.sample_rate,
        audio.codec_context.channels,
    )
    return audio


def _unreadable_error(head: bytes, error: av.error.FFmpegError) -> NotAudioError | TruncatedAudioError:
    """The error for an upload ffmpeg cannot open: truncated if it starts like known media, else not audio."""
    for offset, signature, what in _MEDIA_SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return TruncatedAudioError(
                f"the upload starts like {what} but ffmpeg cannot read it ({_ffmpeg_message(error)}): it "
                "is cut short or corrupt (an incompletely written MP4 lacks its index, the 'moov' atom); "
                "upload the complete file"
            )
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio / ADTS frame sync
        return TruncatedAudioError(
            f"the upload starts like MP3 or AAC audio but ffmpeg cannot read it ({_ffmpeg_message(error)}): "
            "it is cut short or corrupt; upload the complete file"
        )
    return NotAudioError(f"the upload is not audio or video that ffmpeg can read; {_ACCEPTED_HINT}")


# -- decoding helpers


class _MonoResampler:
    """Downmix to mono float32 at one rate (`resample.py`); a new filter when the stream changes rate.

    Decoded frames are small (20 ms of Opus, 1024 samples of PCM) and each conversion has a fixed cost
    far above its work, so frames are gathered in a FIFO and converted `BATCH_S` at a time. The resampler
    streams: how its input is cut does not change its output, so the PCM (and its SHA-1) is the same.
    """

    BATCH_S = 0.5

    def __init__(self, sample_rate_hz: int) -> None:
        self._sample_rate_hz = sample_rate_hz
        self._filter: PolyphaseResampler | None = None
        self._fifo: av.AudioFifo | None = None
        self._batch = 0

    def convert(self, frame: AudioFrame) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        frame.pts = None  # the FIFO checks timestamps for continuity; the PCM does not need them
        if self._fifo is not None:
            try:
                self._fifo.write(frame)
            except ValueError:  # a new rate, layout or format: convert what came before on its own
                out += self._resample(self._fifo.read())
                self._fifo = None
        if self._fifo is None:
            self._fifo = av.AudioFifo()
            self._fifo.write(frame)
            self._batch = max(1, round(frame.sample_rate * self.BATCH_S))
        if self._fifo.samples >= self._batch:
            out += self._resample(self._fifo.read())
        return out

    def _resample(self, frame: AudioFrame | None) -> list[np.ndarray]:
        if frame is None:
            return []
        out: list[np.ndarray] = []
        if self._filter is None or self._filter.in_rate_hz != frame.sample_rate:
            if self._filter is not None:
                out.append(self._filter.flush())
            self._filter = PolyphaseResampler(frame.sample_rate, self._sample_rate_hz)
        try:
            samples = mono(frame)
        except ValueError as error:
            raise NotAudioError(
                f"cannot convert this audio ({frame.layout.name}, {frame.sample_rate} Hz, "
                f"{frame.format.name}) to mono: {error}; {_ACCEPTED_HINT}"
            ) from error
        out.append(self._filter.push(samples))
        return out

    def flush(self) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        if self._fifo is not None and self._fifo.samples:
            out += self._resample(self._fifo.read())
        if self._filter is not None:
            out.append(self._filter.flush())
        return out


def _drop_leading(frame: AudioFrame, count: int) -> AudioFrame | None:
    """`frame` without its first `count` samples; None when nothing is left."""
    if count >= frame.samples:
        return None
    samples = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
    per_sample = 1 if frame.format.is_planar else frame.layout.nb_channels
    trimmed = AudioFrame.from_ndarray(
        np.ascontiguousarray(samples[:, count * per_sample :]), format=frame.format.name, layout=frame.layout
    )
    trimmed.sample_rate = frame.sample_rate
    trimmed.time_base = frame.time_base
    if frame.pts is not None and frame.time_base is not None:
        trimmed.pts = frame.pts + round(count / frame.sample_rate / frame.time_base)
    return trimmed


class _ChunkBuffer:
    """Collects PCM into chunks of exactly `size` samples; holds at most one chunk."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._chunk = np.empty(size, np.float32)
        self._fill = 0

    def add(self, pcm: np.ndarray) -> Iterator[np.ndarray]:
        """Copy `pcm` in; yield each chunk it completes (a new array each time, never reused)."""
        position = 0
        while position < pcm.size:
            take = min(self._size - self._fill, pcm.size - position)
            self._chunk[self._fill : self._fill + take] = pcm[position : position + take]
            self._fill += take
            position += take
            if self._fill == self._size:
                chunk, self._chunk, self._fill = self._chunk, np.empty(self._size, np.float32), 0
                yield chunk

    def drain(self) -> np.ndarray | None:
        """The incomplete last chunk, or None when empty."""
        if self._fill == 0:
            return None
        tail = self._chunk[: self._fill].copy()
        self._fill = 0
        return tail


def _pcm16_le(chunk: np.ndarray) -> np.ndarray:
    """The sha1 definition's samples: clipped to [-1, 1], scaled by 32767, rounded half to even, int16 LE."""
    return np.rint(np.clip(chunk, -1.0, 1.0) * PCM16_SCALE).astype("<i2")


@dataclass(frozen=True)
class _Timeline:
    """Converts the audio stream's timestamps (packets' and decoded frames') to s after its first sample."""

    tick_s: float  # s per timestamp unit (the stream's time base)
    origin_s: float  # s; the timestamp of the first sample

    def seconds(self, timestamp: int | None) -> float | None:
        return None if timestamp is None else timestamp * self.tick_s - self.origin_s


def _frame_end_s(frame: AudioFrame, timeline: _Timeline, previous_end_s: float | None) -> float | None:
    """Where `frame` ends (s after the audio's start), logging a gap after the previous frame's end."""
    length_s = frame.samples / frame.sample_rate
    start_s = timeline.seconds(frame.pts)
    if start_s is None:
        return None if previous_end_s is None else previous_end_s + length_s
    if previous_end_s is not None and start_s - previous_end_s > GAP_WARN_S:
        # Parsers resync silently past corrupt data (a FLAC frame, an Ogg page, a WebM cluster).
        logger.warning(
            "%.3f s of audio missing at %.3f s (corrupt data skipped by ffmpeg); the PCM closes the gap",
            start_s - previous_end_s,
            previous_end_s,
        )
    return start_s + length_s


def _ffmpeg_message(error: av.error.FFmpegError) -> str:
    return error.strerror or type(error).__name__


def _corrupt_error(position_s: float | None, message: str) -> TruncatedAudioError:
    where = "" if position_s is None else f" at {position_s:.3f} s"
    return TruncatedAudioError(
        f"the audio is corrupt{where}: ffmpeg cannot decode it ({message}) and more audio follows; "
        "re-export or re-upload the file"
    )


def _check_range(start_s: float, duration_s: float | None) -> None:
    if not isinstance(start_s, int | float) or not math.isfinite(start_s) or start_s < 0:
        raise InvalidRangeError(f"start_s must be a finite number of seconds >= 0, got {start_s!r}")
    if duration_s is not None and (
        not isinstance(duration_s, int | float) or not math.isfinite(duration_s) or duration_s <= 0
    ):
        raise InvalidRangeError(
            f"duration_s must be a finite number of seconds > 0 (omit it to decode to the end), "
            f"got {duration_s!r}"
        )
