from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_REFERENCE: _ClassVar[Role]
    ROLE_QUERY: _ClassVar[Role]
ROLE_UNSPECIFIED: Role
ROLE_REFERENCE: Role
ROLE_QUERY: Role

class FingerprintOptions(_message.Message):
    __slots__ = ("role", "start_s", "duration_s", "file_name")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    START_S_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    role: Role
    start_s: float
    duration_s: float
    file_name: str
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., start_s: _Optional[float] = ..., duration_s: _Optional[float] = ..., file_name: _Optional[str] = ...) -> None: ...

class FingerprintRequest(_message.Message):
    __slots__ = ("options", "audio_chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: FingerprintOptions
    audio_chunk: bytes
    def __init__(self, options: _Optional[_Union[FingerprintOptions, _Mapping]] = ..., audio_chunk: _Optional[bytes] = ...) -> None: ...

class Fingerprint(_message.Message):
    __slots__ = ("hashes_u32le", "offsets_frames_i32le", "peaks")
    HASHES_U32LE_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FRAMES_I32LE_FIELD_NUMBER: _ClassVar[int]
    PEAKS_FIELD_NUMBER: _ClassVar[int]
    hashes_u32le: bytes
    offsets_frames_i32le: bytes
    peaks: bytes
    def __init__(self, hashes_u32le: _Optional[bytes] = ..., offsets_frames_i32le: _Optional[bytes] = ..., peaks: _Optional[bytes] = ...) -> None: ...

class Peaks(_message.Message):
    __slots__ = ("frames_i32le", "freq_hz_f64le", "magnitude_f32le", "n_frames")
    FRAMES_I32LE_FIELD_NUMBER: _ClassVar[int]
    FREQ_HZ_F64LE_FIELD_NUMBER: _ClassVar[int]
    MAGNITUDE_F32LE_FIELD_NUMBER: _ClassVar[int]
    N_FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames_i32le: bytes
    freq_hz_f64le: bytes
    magnitude_f32le: bytes
    n_frames: int
    def __init__(self, frames_i32le: _Optional[bytes] = ..., freq_hz_f64le: _Optional[bytes] = ..., magnitude_f32le: _Optional[bytes] = ..., n_frames: _Optional[int] = ...) -> None: ...

class FingerprintResponse(_message.Message):
    __slots__ = ("file_sha1", "duration_s", "sample_rate_hz", "frame_s", "fingerprint_version", "fingerprint", "peaks")
    FILE_SHA1_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    FRAME_S_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PEAKS_FIELD_NUMBER: _ClassVar[int]
    file_sha1: str
    duration_s: float
    sample_rate_hz: int
    frame_s: float
    fingerprint_version: int
    fingerprint: Fingerprint
    peaks: Peaks
    def __init__(self, file_sha1: _Optional[str] = ..., duration_s: _Optional[float] = ..., sample_rate_hz: _Optional[int] = ..., frame_s: _Optional[float] = ..., fingerprint_version: _Optional[int] = ..., fingerprint: _Optional[_Union[Fingerprint, _Mapping]] = ..., peaks: _Optional[_Union[Peaks, _Mapping]] = ...) -> None: ...
