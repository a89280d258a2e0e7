"""Errors a user's input or a stored file can cause, each with a message that says what is wrong."""

from __future__ import annotations

from typing import ClassVar


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class AudioError(EngineError, ValueError):
    """The upload cannot be used as audio. Subclasses say why; all map to HTTP 400."""

    reason: ClassVar[str] = "BAD_AUDIO"  # machine-readable, carried across the services


class NotAudioError(AudioError):
    """The bytes are not a media container or codec that ffmpeg recognises."""

    reason = "NOT_AUDIO"


class TruncatedAudioError(AudioError):
    """The file starts as valid media but is cut short or corrupt before its first decodable audio."""

    reason = "TRUNCATED"


class EmptyAudioError(AudioError):
    """The upload is zero bytes long, or its audio stream decodes to no samples."""

    reason = "EMPTY"


class NoAudioStreamError(AudioError):
    """The container is valid (e.g. a video) but holds no audio stream."""

    reason = "NO_AUDIO_STREAM"


class ClipTooShortError(AudioError):
    """The decoded audio is shorter than the minimum clip length the engine can recognise."""

    reason = "CLIP_TOO_SHORT"


class StartBeyondEndError(AudioError):
    """The requested `start` lies at or after the end of the audio."""

    reason = "START_BEYOND_END"


class InvalidRangeError(AudioError):
    """`start` or `duration` is negative, NaN or infinite."""

    reason = "INVALID_RANGE"


class StoreError(EngineError):
    """A store cannot be read or written."""


class StoreFormatError(StoreError):
    """Stored data carries a format version this code does not know (written by a newer tunescout)."""
