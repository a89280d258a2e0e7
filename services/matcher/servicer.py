"""MatcherService: translates protos to ShardSet calls and domain errors to status codes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

import grpc
import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.matcher.cache import LookupCache, MemoryLookupCache, RedisLookupCache
from services.matcher.ingest_lock import IngestBusy, LocalIngestLocks, RedisIngestLocks
from services.matcher.settings import MatcherSettings
from services.matcher.shards import check_supported, open_shard
from services.matcher.shardset import (
    REOPEN_INTERVAL_S,
    STORED_HASHES_RECOUNT_S,
    FanoutReport,
    ShardHandle,
    ShardSet,
    ShardUnavailable,
    StoredTrack,
)
from tunescout.common import wire
from tunescout.common.config import Config
from tunescout.common.grpc_errors import abort
from tunescout.engine import verify
from tunescout.engine.errors import StoreError
from tunescout.engine.fingerprint import extract_peaks
from tunescout.engine.match import TrackSize, match_peaks
from tunescout.engine.params import DEFAULT_MATCH_PARAMS, DEFAULT_PARAMS, FINGERPRINT_VERSION
from tunescout.engine.peaks import Peaks, Role
from tunescout.matcher.v1 import matcher_pb2 as pb
from tunescout.matcher.v1 import matcher_pb2_grpc as pb_grpc
from tunescout.store import embedded as embedded_store
from tunescout.store.shard import Postings, TrackMeta

logger = logging.getLogger(__name__)

# redis-py retries a failed call with backoff by default (3.5 s per call when Redis is down), which would
# push every shard past its deadline: a fault must cost one refused connection, then the cache steps aside
NO_RETRY = Retry(NoBackoff(), 0)

_SHA1_HEX = 40
STARTUP_WAIT_S = 30.0  # how long start-up waits for every shard before serving with those that opened


def build_shardset(config: Config, settings: MatcherSettings) -> ShardSet:
    handles = []
    for index, store in enumerate(config.instances):
        cache: LookupCache
        if config.redis is not None:
            client = redis.Redis.from_url(
                config.redis.url(store.redis_db_index),
                socket_timeout=0.25,
                socket_connect_timeout=0.25,
                retry=NO_RETRY,
            )
            cache = RedisLookupCache(client, config.redis.prefix, store.name, settings.cache_ttl_s)
        else:
            cache = MemoryLookupCache(int(settings.memory_cache_mb * 1024 * 1024), settings.cache_ttl_s)
        data_dir: Path = settings.data_dir
        handles.append(ShardHandle(index, store, lambda s, d=data_dir: open_shard(s, d), cache))
    locks: LocalIngestLocks = LocalIngestLocks()
    if config.redis is not None:
        client = redis.Redis.from_url(
            config.redis.url(config.rate_limits.redis_db_index),
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=NO_RETRY,
        )
        locks = RedisIngestLocks(client, config.redis.prefix)
    return ShardSet(handles, settings.shard_deadline_s, locks)


class MatcherServicer(pb_grpc.MatcherServiceServicer):
    def __init__(self, config: Config, settings: MatcherSettings) -> None:
        self._config = config
        self._settings = settings
        self._shards: ShardSet | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._recount: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the shards; health turns SERVING when all of them answer, or after `STARTUP_WAIT_S` when at
        least one does (the others rejoin when they can be opened)."""
        for store in self._config.instances:
            check_supported(store)
        shards = build_shardset(self._config, self._settings)
        deadline = asyncio.get_running_loop().time() + STARTUP_WAIT_S
        while True:
            opened = []
            for handle in shards.handles:
                try:
                    await asyncio.to_thread(handle.shard)
                    opened.append(handle.name)
                except ShardUnavailable:
                    pass
            if len(opened) == len(shards.handles):
                break
            if opened and asyncio.get_running_loop().time() > deadline:
                logger.warning(
                    "serving with %d of %d shards; the others rejoin when they open",
                    len(opened),
                    len(shards.handles),
                )
                break
            await asyncio.sleep(REOPEN_INTERVAL_S)
        await asyncio.to_thread(warm_up, any(s.database_type == "embedded" for s in self._config.instances))
        await asyncio.to_thread(shards.count_stored_hashes)
        self._recount = asyncio.create_task(self._recount_catalogue(shards))
        self._shards = shards
        logger.info("shards open: %s", ", ".join(opened))
        if self._settings.compact_idle_s > 0:
            self._maintenance = asyncio.create_task(self._compact_when_idle(shards))

    async def _compact_when_idle(self, shards: ShardSet) -> None:
        """Background upkeep: compact shards whose writes have paused (never on the event loop)."""
        while True:
            await asyncio.sleep(min(5.0, self._settings.compact_idle_s))
            await asyncio.to_thread(shards.compact_idle, self._settings.compact_idle_s)

    async def _recount_catalogue(self, shards: ShardSet) -> None:
        """Background upkeep: keep the catalogue size that calibrates confidences current, off the
        recognitions' path (a count is a query on MySQL and ClickHouse shards)."""
        while True:
            await asyncio.sleep(STORED_HASHES_RECOUNT_S)
            try:
                await asyncio.to_thread(shards.count_stored_hashes)
            except Exception:  # the last count stays; the next round tries again
                logger.exception("counting the shards' hashes failed")

    async def close(self) -> None:
        for task in (self._maintenance, self._recount):
            if task is not None:
                task.cancel()
        self._maintenance = self._recount = None
        if self._shards is not None:
            await asyncio.to_thread(self._shards.close)
            self._shards = None

    async def _ready(self, context: grpc.aio.ServicerContext) -> ShardSet:
        if self._shards is None:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "STARTING", "the matcher is opening its shards")
        return self._shards

    async def _check_version(self, version: int, context: grpc.aio.ServicerContext) -> None:
        if version != FINGERPRINT_VERSION:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "FINGERPRINT_VERSION",
                f"fingerprint version {version} sent, this matcher stores version {FINGERPRINT_VERSION}; "
                "run the fingerprinter and matcher of the same release",
            )

    async def Ingest(self, request: pb.IngestRequest, context: grpc.aio.ServicerContext) -> pb.IngestResponse:
        shards = await self._ready(context)
        await self._check_version(request.fingerprint_version, context)
        meta = request.metadata
        if len(meta.file_sha1) != _SHA1_HEX or not meta.title.strip():
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "BAD_METADATA",
                "metadata needs a 40-character hex file_sha1 and a non-empty title",
            )
        try:
            hashes = wire.from_bytes(request.hashes_u32le, wire.U32, "hashes_u32le")
            offsets = wire.from_bytes(request.offsets_frames_i32le, wire.I32, "offsets_frames_i32le")
            if hashes.size != offsets.size or hashes.size == 0:
                raise ValueError("hashes and offsets must be parallel and not empty")
            if request.peaks:  # read whole (a 3-hour track's take ~10 ms): off the event loop
                await asyncio.to_thread(verify.decode, request.peaks)  # PeaksFormatError says what is wrong
        except ValueError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_FINGERPRINT", str(exc))
        track_meta = TrackMeta(
            file_sha1=meta.file_sha1.lower(),
            title=meta.title,
            artist=meta.artist,
            album=meta.album,
            year=meta.year or None,
            duration_s=meta.duration_s,
        )
        try:
            stored, already = await asyncio.to_thread(
                shards.ingest, track_meta, hashes, offsets, request.peaks
            )
        except ShardUnavailable as exc:
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "SHARD_UNAVAILABLE",
                f"cannot store the track now: {exc}",
            )
        except IngestBusy as exc:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "INGEST_BUSY", f"{exc}; try again shortly")
        except (StoreError, ValueError) as exc:
            logger.exception("ingest of %s failed", track_meta.file_sha1)
            await abort(context, grpc.StatusCode.INTERNAL, "STORE_FAILED", f"storing the track failed: {exc}")
        if not already:
            logger.info(
                "stored %s (%r, %d hashes) in shard %s",
                track_meta.file_sha1,
                track_meta.title,
                stored.track.n_hashes,
                stored.shard,
            )
        return pb.IngestResponse(track=_track(stored), already_present=already)

    async def Match(self, request: pb.MatchRequest, context: grpc.aio.ServicerContext) -> pb.MatchResponse:
        shards = await self._ready(context)
        await self._check_version(request.fingerprint_version, context)
        try:
            t = wire.from_bytes(request.frames_i32le, wire.I32, "frames_i32le")
            freq = wire.from_bytes(request.freq_hz_f64le, wire.F64, "freq_hz_f64le")
            mag = wire.from_bytes(request.magnitude_f32le, np.dtype("<f4"), "magnitude_f32le")
            if not (t.size == freq.size == mag.size):
                raise ValueError("frames, frequencies and magnitudes must be parallel")
            if t.size and (int(t[0]) < 0 or bool(np.any(np.diff(t) < 0))):
                raise ValueError("frames must be non-negative and in ascending order")
            if not (np.isfinite(freq).all() and np.isfinite(mag).all()):
                raise ValueError("frequencies and magnitudes must be finite")
        except ValueError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_PEAKS", str(exc))
        peaks = Peaks(
            t=t.astype(np.int32),
            freq_hz=freq.astype(np.float64),
            magnitude=mag.astype(np.float32),
            n_frames=int(request.n_frames),
        )
        report = FanoutReport()
        matches, tracks = await asyncio.to_thread(_match, shards, peaks, report)
        response = pb.MatchResponse(shards_asked=len(shards.handles))
        for m in matches:
            stored = tracks.get(m.track_id)
            if stored is None:  # deleted meanwhile
                continue
            response.matches.append(
                pb.TrackMatch(
                    track=_track(stored),
                    offset_frames=m.offset_frames,
                    offset_s=m.offset_s,
                    matched_hashes=m.matches,
                    query_hashes=m.query_hashes,
                    query_hash_share=m.query_hash_share,
                    track_hash_share=m.track_hash_share,
                    confidence=m.confidence,
                    speed=m.speed,
                    tempo=m.tempo,
                )
            )
        for name, reason in sorted(report.unavailable.items()):
            response.unavailable_shards.append(pb.ShardFault(shard=name, reason=reason))
        return response

    async def DeleteTrack(
        self, request: pb.DeleteTrackRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTrackResponse:
        shards = await self._ready(context)
        try:
            found = await asyncio.to_thread(shards.delete, request.file_sha1.lower())
        except ShardUnavailable as exc:
            await abort(
                context, grpc.StatusCode.UNAVAILABLE, "SHARD_UNAVAILABLE", f"cannot delete now: {exc}"
            )
        if found is None:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                "TRACK_NOT_FOUND",
                f"no shard holds a track with file_sha1 {request.file_sha1!r}",
            )
        logger.info("deleted %s from shard %s", request.file_sha1, found.shard)
        return pb.DeleteTrackResponse(track=_track(found))

    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsResponse:
        shards = await self._ready(context)
        stats, report = await asyncio.to_thread(shards.stats)
        response = pb.StatsResponse()
        for handle in shards.handles:
            st = stats.get(handle.name)
            if st is not None:
                response.shards.append(
                    pb.ShardStats(
                        shard=handle.name,
                        database_type=handle.config.database_type,
                        n_tracks=st.n_tracks,
                        n_hashes=st.n_hashes,
                        bytes_on_disk=st.bytes_on_disk,
                    )
                )
        for name, reason in sorted(report.unavailable.items()):
            response.unavailable_shards.append(pb.ShardFault(shard=name, reason=reason))
        return response


def warm_up(embedded: bool) -> None:
    """Load (or compile) the hashing and scoring kernels before the first recognition waits for them, and
    with `embedded` (an embedded shard is configured) the store's before the first upload does."""
    if embedded:
        try:
            embedded_store.warm_up(FINGERPRINT_VERSION)
        except Exception as exc:  # only a speed-up: a full or read-only /tmp must not stop the matcher
            logger.warning("store warm-up failed (%s); the first uploads compile the store's kernels", exc)
    rng = np.random.default_rng(0)
    pcm = rng.standard_normal(DEFAULT_PARAMS.sample_rate_hz * 3).astype(np.float32)
    peaks = extract_peaks([pcm], DEFAULT_PARAMS, Role.QUERY)

    # every hash stored once, in one track: enough matches that scoring runs (and compiles) as far as a
    # real one does (one posting in all is dropped before scoring: no track could be reported from it),
    # and all at one offset, which no query frame agrees on enough to end the search before the hypotheses
    def everything_once(hashes: np.ndarray, cap: int) -> Postings:
        n = hashes.shape[0]
        return Postings(np.arange(n, dtype=np.int32), np.ones(n, np.int64), np.zeros(n, np.int32))

    match_peaks(
        peaks, everything_once, lambda ids: {1: TrackSize(n_hashes=1)}, DEFAULT_PARAMS, DEFAULT_MATCH_PARAMS
    )
    # settling a contested offset (the match above has no rival place) and checking an upload's peaks
    t, cells = verify.query_cells(peaks, DEFAULT_PARAMS)
    verify.coincidences(verify.decode(verify.encode(peaks, DEFAULT_PARAMS)), t, cells, [0])


def _match(shards: ShardSet, peaks: Peaks, report: FanoutReport) -> tuple[list, dict[int, StoredTrack]]:
    # track records fetched once per recognition: scoring asks for the candidates' sizes (after the plain
    # hypothesis and again after the others) and the answer needs the winners' metadata
    known: dict[int, StoredTrack] = {}

    def sizes(gids: Iterable[int]) -> dict[int, TrackSize]:
        wanted = set(gids)
        missing = [g for g in wanted if g not in known]
        if missing:
            known.update(shards.tracks(missing, report))
        return {g: TrackSize(n_hashes=known[g].track.n_hashes) for g in wanted if g in known}

    matches = match_peaks(
        peaks,
        lambda hashes, cap: shards.lookup(hashes, cap, report),
        sizes,
        DEFAULT_PARAMS,
        DEFAULT_MATCH_PARAMS,
        stored_hashes=shards.stored_hashes(),
        track_peaks=lambda gids: shards.peaks(gids, report),
    )
    return matches, {m.track_id: known[m.track_id] for m in matches if m.track_id in known}


def _track(stored: StoredTrack) -> pb.Track:
    t = stored.track
    return pb.Track(
        shard=stored.shard,
        track_id=t.track_id,
        n_hashes=t.n_hashes,
        metadata=pb.TrackMetadata(
            file_sha1=t.file_sha1,
            title=t.title,
            artist=t.artist,
            album=t.album,
            year=t.year or 0,
            duration_s=t.duration_s,
        ),
    )
