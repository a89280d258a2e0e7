from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrackMetadata(_message.Message):
    __slots__ = ("file_sha1", "title", "artist", "album", "year", "duration_s")
    FILE_SHA1_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ARTIST_FIELD_NUMBER: _ClassVar[int]
    ALBUM_FIELD_NUMBER: _ClassVar[int]
    YEAR_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    file_sha1: str
    title: str
    artist: str
    album: str
    year: int
    duration_s: float
    def __init__(self, file_sha1: _Optional[str] = ..., title: _Optional[str] = ..., artist: _Optional[str] = ..., album: _Optional[str] = ..., year: _Optional[int] = ..., duration_s: _Optional[float] = ...) -> None: ...

class Track(_message.Message):
    __slots__ = ("shard", "track_id", "metadata", "n_hashes")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    N_HASHES_FIELD_NUMBER: _ClassVar[int]
    shard: str
    track_id: int
    metadata: TrackMetadata
    n_hashes: int
    def __init__(self, shard: _Optional[str] = ..., track_id: _Optional[int] = ..., metadata: _Optional[_Union[TrackMetadata, _Mapping]] = ..., n_hashes: _Optional[int] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("metadata", "hashes_u32le", "offsets_frames_i32le", "fingerprint_version", "peaks")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HASHES_U32LE_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FRAMES_I32LE_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PEAKS_FIELD_NUMBER: _ClassVar[int]
    metadata: TrackMetadata
    hashes_u32le: bytes
    offsets_frames_i32le: bytes
    fingerprint_version: int
    peaks: bytes
    def __init__(self, metadata: _Optional[_Union[TrackMetadata, _Mapping]] = ..., hashes_u32le: _Optional[bytes] = ..., offsets_frames_i32le: _Optional[bytes] = ..., fingerprint_version: _Optional[int] = ..., peaks: _Optional[bytes] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("track", "already_present")
    TRACK_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    track: Track
    already_present: bool
    def __init__(self, track: _Optional[_Union[Track, _Mapping]] = ..., already_present: _Optional[bool] = ...) -> None: ...

class MatchRequest(_message.Message):
    __slots__ = ("frames_i32le", "freq_hz_f64le", "magnitude_f32le", "n_frames", "fingerprint_version")
    FRAMES_I32LE_FIELD_NUMBER: _ClassVar[int]
    FREQ_HZ_F64LE_FIELD_NUMBER: _ClassVar[int]
    MAGNITUDE_F32LE_FIELD_NUMBER: _ClassVar[int]
    N_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_VERSION_FIELD_NUMBER: _ClassVar[int]
    frames_i32le: bytes
    freq_hz_f64le: bytes
    magnitude_f32le: bytes
    n_frames: int
    fingerprint_version: int
    def __init__(self, frames_i32le: _Optional[bytes] = ..., freq_hz_f64le: _Optional[bytes] = ..., magnitude_f32le: _Optional[bytes] = ..., n_frames: _Optional[int] = ..., fingerprint_version: _Optional[int] = ...) -> None: ...

class TrackMatch(_message.Message):
    __slots__ = ("track", "offset_frames", "offset_s", "matched_hashes", "query_hashes", "query_hash_share", "track_hash_share", "confidence", "speed", "tempo")
    TRACK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FRAMES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_S_FIELD_NUMBER: _ClassVar[int]
    MATCHED_HASHES_FIELD_NUMBER: _ClassVar[int]
    QUERY_HASHES_FIELD_NUMBER: _ClassVar[int]
    QUERY_HASH_SHARE_FIELD_NUMBER: _ClassVar[int]
    TRACK_HASH_SHARE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    TEMPO_FIELD_NUMBER: _ClassVar[int]
    track: Track
    offset_frames: int
    offset_s: float
    matched_hashes: int
    query_hashes: int
    query_hash_share: float
    track_hash_share: float
    confidence: float
    speed: float
    tempo: float
    def __init__(self, track: _Optional[_Union[Track, _Mapping]] = ..., offset_frames: _Optional[int] = ..., offset_s: _Optional[float] = ..., matched_hashes: _Optional[int] = ..., query_hashes: _Optional[int] = ..., query_hash_share: _Optional[float] = ..., track_hash_share: _Optional[float] = ..., confidence: _Optional[float] = ..., speed: _Optional[float] = ..., tempo: _Optional[float] = ...) -> None: ...

class ShardFault(_message.Message):
    __slots__ = ("shard", "reason")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    shard: str
    reason: str
    def __init__(self, shard: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("matches", "unavailable_shards", "shards_asked")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_SHARDS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_ASKED_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[TrackMatch]
    unavailable_shards: _containers.RepeatedCompositeFieldContainer[ShardFault]
    shards_asked: int
    def __init__(self, matches: _Optional[_Iterable[_Union[TrackMatch, _Mapping]]] = ..., unavailable_shards: _Optional[_Iterable[_Union[ShardFault, _Mapping]]] = ..., shards_asked: _Optional[int] = ...) -> None: ...

class DeleteTrackRequest(_message.Message):
    __slots__ = ("file_sha1",)
    FILE_SHA1_FIELD_NUMBER: _ClassVar[int]
    file_sha1: str
    def __init__(self, file_sha1: _Optional[str] = ...) -> None: ...

class DeleteTrackResponse(_message.Message):
    __slots__ = ("track",)
    TRACK_FIELD_NUMBER: _ClassVar[int]
    track: Track
    def __init__(self, track: _Optional[_Union[Track, _Mapping]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardStats(_message.Message):
    __slots__ = ("shard", "database_type", "n_tracks", "n_hashes", "bytes_on_disk")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    DATABASE_TYPE_FIELD_NUMBER: _ClassVar[int]
    N_TRACKS_FIELD_NUMBER: _ClassVar[int]
    N_HASHES_FIELD_NUMBER: _ClassVar[int]
    BYTES_ON_DISK_FIELD_NUMBER: _ClassVar[int]
    shard: str
    database_type: str
    n_tracks: int
    n_hashes: int
    bytes_on_disk: int
    def __init__(self, shard: _Optional[str] = ..., database_type: _Optional[str] = ..., n_tracks: _Optional[int] = ..., n_hashes: _Optional[int] = ..., bytes_on_disk: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("shards", "unavailable_shards")
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_SHARDS_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[ShardStats]
    unavailable_shards: _containers.RepeatedCompositeFieldContainer[ShardFault]
    def __init__(self, shards: _Optional[_Iterable[_Union[ShardStats, _Mapping]]] = ..., unavailable_shards: _Optional[_Iterable[_Union[ShardFault, _Mapping]]] = ...) -> None: ...
