"""The request id: made (or taken from X-Request-ID) by the gateway, carried to every service in the gRPC
metadata key `x-request-id`, and put on every log record made while the request is served."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

METADATA_KEY = "x-request-id"
HTTP_HEADER = "X-Request-ID"
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_request_id(incoming: str | None = None) -> str:
    """The caller's id when it looks like one (a proxy's), else a fresh one."""
    if incoming and _SANE.match(incoming):
        return incoming
    return uuid.uuid4().hex


def outgoing_metadata() -> tuple[tuple[str, str], ...] | None:
    rid = REQUEST_ID.get()
    return ((METADATA_KEY, rid),) if rid else None


def _with_request_id(rid: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        token = REQUEST_ID.set(rid)
        try:
            return await method(request, context)
        finally:
            REQUEST_ID.reset(token)

    return handler


def wrap_handler(
    handler: grpc.RpcMethodHandler,
    wrap: Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]],
) -> grpc.RpcMethodHandler:
    """`handler` with its unary or client-streaming behaviour passed through `wrap` (server interceptors)."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary), handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary), handler.request_deserializer, handler.response_serializer
        )
    return handler


class RequestIdInterceptor(grpc.aio.ServerInterceptor):
    """Serves each call with REQUEST_ID set from its metadata (unary and client-streaming RPCs)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        rid = dict(handler_call_details.invocation_metadata or ()).get(METADATA_KEY)
        if handler is None or not rid or not _SANE.match(str(rid)):
            return handler
        return wrap_handler(handler, lambda method: _with_request_id(rid, method))
