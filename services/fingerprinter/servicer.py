"""FingerprinterService: spools a streamed upload and fingerprints it in a process pool.

Small uploads go to a worker as bytes; larger ones are spooled to a temporary file first, so no message and
no process holds a long upload whole. A worker that dies (a decoder crash on a hostile file) breaks the pool:
the pool is rebuilt and the upload tried once more; a second crash is the file's fault (DECODER_CRASHED).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import IO

import grpc

from services.fingerprinter import worker
from services.fingerprinter.settings import FingerprinterSettings
from tunescout.common.grpc_errors import abort
from tunescout.common.metrics import FINGERPRINT_JOBS
from tunescout.engine.params import DEFAULT_PARAMS, FINGERPRINT_VERSION
from tunescout.fingerprinter.v1 import fingerprinter_pb2 as pb
from tunescout.fingerprinter.v1 import fingerprinter_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

IN_MEMORY_LIMIT = 8 * 1024 * 1024  # bytes: smaller uploads (queries) skip the spool file


class FingerprinterServicer(pb_grpc.FingerprinterServiceServicer):
    def __init__(self, settings: FingerprinterSettings) -> None:
        self._settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = asyncio.Lock()
        self._job = worker.fingerprint_file  # a module-level function: it is sent to worker processes

    async def start(self) -> None:
        """Start the workers and let each load its kernels before health says SERVING."""
        pool = self._new_pool()
        self._pool = pool
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(pool, worker.warm_up) for _ in range(self._settings.workers))
        )
        logger.info("%d fingerprint workers ready", self._settings.workers)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: a fork of a process running an event loop and gRPC threads is unsafe
        return ProcessPoolExecutor(
            self._settings.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker.init_worker,
        )

    async def Fingerprint(
        self, request_iterator: AsyncIterator[pb.FingerprintRequest], context: grpc.aio.ServicerContext
    ) -> pb.FingerprintResponse:
        options: pb.FingerprintOptions | None = None
        size = 0
        buffer = bytearray()
        spool: IO[bytes] | None = None
        try:
            async for message in request_iterator:
                if options is None:
                    if not message.HasField("options"):
                        await abort(
                            context,
                            grpc.StatusCode.INVALID_ARGUMENT,
                            "NO_OPTIONS",
                            "the first message of the stream must carry the options",
                        )
                    options = message.options
                chunk = message.audio_chunk
                size += len(chunk)
                if size > self._settings.max_upload_bytes:
                    await abort(
                        context,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "UPLOAD_TOO_LARGE",
                        f"the upload is larger than {self._settings.max_upload_bytes // (1024 * 1024)} MB",
                    )
                if spool is None:
                    buffer += chunk
                    if len(buffer) > IN_MEMORY_LIMIT:
                        spool = await asyncio.to_thread(self._open_spool)
                        await asyncio.to_thread(spool.write, bytes(buffer))
                        buffer = bytearray()
                elif chunk:
                    await asyncio.to_thread(spool.write, chunk)
            if options is None:
                await abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, "NO_OPTIONS", "the stream carried no message"
                )
            if options.role == pb.ROLE_UNSPECIFIED:
                await abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "NO_ROLE",
                    "options.role must be ROLE_REFERENCE or ROLE_QUERY",
                )
            if spool is not None:
                await asyncio.to_thread(spool.flush)
            source: bytes | str = spool.name if spool is not None else bytes(buffer)
            result = await self._run(
                context,
                source,
                options.role == pb.ROLE_QUERY,
                options.start_s,
                options.duration_s if options.duration_s > 0 else None,
                options.file_name,
            )
        finally:
            if spool is not None:
                spool.close()
                await asyncio.to_thread(_unlink, spool.name)
        if isinstance(result, worker.WorkerRefusal):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, result.reason, result.message)
        response = pb.FingerprintResponse(
            file_sha1=result.file_sha1,
            duration_s=result.duration_s,
            sample_rate_hz=result.sample_rate_hz,
            frame_s=DEFAULT_PARAMS.frame_seconds,
            fingerprint_version=FINGERPRINT_VERSION,
        )
        if options.role == pb.ROLE_QUERY:
            response.peaks.CopyFrom(
                pb.Peaks(
                    frames_i32le=result.frames_i32le,
                    freq_hz_f64le=result.freq_hz_f64le,
                    magnitude_f32le=result.magnitude_f32le,
                    n_frames=result.n_frames,
                )
            )
        else:
            response.fingerprint.CopyFrom(
                pb.Fingerprint(
                    hashes_u32le=result.hashes_u32le,
                    offsets_frames_i32le=result.offsets_frames_i32le,
                    peaks=result.peaks,
                )
            )
        return response

    def _open_spool(self) -> IO[bytes]:
        spool_dir = self._settings.spool_dir
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile(prefix="upload-", dir=spool_dir, delete=False)

    async def _run(
        self,
        context: grpc.aio.ServicerContext,
        source: bytes | str,
        query: bool,
        start_s: float,
        duration_s: float | None,
        file_name: str,
    ) -> worker.WorkerResult | worker.WorkerRefusal:
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._pool
            if pool is None:
                await abort(
                    context, grpc.StatusCode.UNAVAILABLE, "STARTING", "the fingerprinter is not ready"
                )
            try:
                with FINGERPRINT_JOBS.track_inprogress():
                    return await loop.run_in_executor(pool, self._job, source, query, start_s, duration_s)
            except BrokenProcessPool:
                logger.warning(
                    "a fingerprint worker died (attempt %d, upload %r); restarting the pool",
                    attempt,
                    file_name,
                )
                await self._replace_pool(pool)
        await abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            "DECODER_CRASHED",
            "the decoder crashed twice on this file; it is damaged or not a supported format",
        )

    async def _replace_pool(self, broken: ProcessPoolExecutor) -> None:
        async with self._pool_lock:
            if self._pool is broken:  # another call may have replaced it already
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
