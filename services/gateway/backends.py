"""The gateway's gRPC clients: one channel per service, a deadline on every call, and gRPC failures turned
into API errors (status code and a message for the user)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.gateway.errors import ApiError
from tunescout.common.grpc_errors import error_reason
from tunescout.common.grpc_server import channel
from tunescout.common.request_id import outgoing_metadata
from tunescout.fingerprinter.v1 import fingerprinter_pb2 as fp_pb
from tunescout.fingerprinter.v1 import fingerprinter_pb2_grpc as fp_grpc
from tunescout.matcher.v1 import matcher_pb2 as m_pb
from tunescout.matcher.v1 import matcher_pb2_grpc as m_grpc
from tunescout.results.v1 import results_pb2 as r_pb
from tunescout.results.v1 import results_pb2_grpc as r_grpc

logger = logging.getLogger(__name__)


class ResultNotFound(Exception):
    pass


def _api_error(service: str, error: grpc.aio.AioRpcError) -> ApiError:
    code = error.code()
    message = error.details() or code.name
    reason = error_reason(error)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ApiError(400, message, reason=reason)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ApiError(413, message)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ApiError(504, f"The {service} service did not answer in time; try again")
    if code == grpc.StatusCode.UNAVAILABLE:
        detail = message if reason else "it is not reachable"
        return ApiError(503, f"The {service} service is unavailable ({detail}); try again shortly")
    logger.error("%s failed: %s %s (%s)", service, code.name, message, reason)
    return ApiError(500, f"The {service} service failed: {message}")


class Backends:
    def __init__(self, fingerprinter: str, matcher: str, results: str) -> None:
        self.channels = [channel(fingerprinter), channel(matcher), channel(results)]
        self.fingerprinter = fp_grpc.FingerprinterServiceStub(self.channels[0])
        self.matcher = m_grpc.MatcherServiceStub(self.channels[1])
        self.results = r_grpc.ResultsServiceStub(self.channels[2])

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()

    async def fingerprint(
        self, audio: AsyncIterator[bytes], options: fp_pb.FingerprintOptions, timeout_s: float
    ) -> fp_pb.FingerprintResponse:
        async def requests() -> AsyncIterator[fp_pb.FingerprintRequest]:
            yield fp_pb.FingerprintRequest(options=options)
            async for chunk in audio:
                yield fp_pb.FingerprintRequest(audio_chunk=chunk)

        try:
            return await self.fingerprinter.Fingerprint(
                requests(), timeout=timeout_s, metadata=outgoing_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise _api_error("fingerprinter", exc) from None

    async def match(self, request: m_pb.MatchRequest, timeout_s: float) -> m_pb.MatchResponse:
        try:
            return await self.matcher.Match(request, timeout=timeout_s, metadata=outgoing_metadata())
        except grpc.aio.AioRpcError as exc:
            raise _api_error("matcher", exc) from None

    async def ingest(self, request: m_pb.IngestRequest, timeout_s: float) -> m_pb.IngestResponse:
        try:
            return await self.matcher.Ingest(request, timeout=timeout_s, metadata=outgoing_metadata())
        except grpc.aio.AioRpcError as exc:
            raise _api_error("matcher", exc) from None

    async def put_result(self, result: dict[str, Any], timeout_s: float) -> str:
        """The new token; ApiError when the results service cannot store it."""
        try:
            response = await self.results.Put(
                r_pb.PutRequest(result_json=json.dumps(result)),
                timeout=timeout_s,
                metadata=outgoing_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise _api_error("results", exc) from None
        return response.token

    async def get_result(self, token: str, timeout_s: float) -> dict[str, Any]:
        try:
            response = await self.results.Get(
                r_pb.GetRequest(token=token), timeout=timeout_s, metadata=outgoing_metadata()
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ResultNotFound(token) from None
            raise _api_error("results", exc) from None
        return json.loads(response.result_json)
