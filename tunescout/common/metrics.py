"""Prometheus metrics shared by the services (prometheus-client), served on a port of their own.

Every gRPC server counts and times its RPCs by method and status code (`MetricsInterceptor`); services
add their own metrics here so the names stay in one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from tunescout.common.request_id import wrap_handler

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0)

GRPC_REQUESTS = Counter("tunescout_grpc_requests_total", "gRPC calls served", ["method", "code"])
GRPC_SECONDS = Histogram(
    "tunescout_grpc_request_seconds", "gRPC call latency", ["method"], buckets=LATENCY_BUCKETS_S
)
HTTP_REQUESTS = Counter(
    "tunescout_http_requests_total", "HTTP requests served", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "tunescout_http_request_seconds", "HTTP request latency", ["route", "method"], buckets=LATENCY_BUCKETS_S
)
SHARD_LOOKUP_SECONDS = Histogram(
    "tunescout_shard_lookup_seconds", "lookup latency per shard", ["shard"], buckets=LATENCY_BUCKETS_S
)
SHARD_ERRORS = Counter("tunescout_shard_errors_total", "shards left out of an answer", ["shard"])
CACHE_LOOKUPS = Counter("tunescout_lookup_cache_total", "lookup cache reads", ["shard", "result"])
FINGERPRINT_JOBS = Gauge("tunescout_fingerprint_jobs_in_flight", "uploads being fingerprinted or queued")


def start_metrics(port: int) -> None:
    """Serve /metrics on `port` (0: no metrics endpoint)."""
    if port > 0:
        start_http_server(port)
        logger.info("metrics on :%d/metrics", port)


class _InFlight:
    """Calls whose handler is running, in this process (health and reflection left out)."""

    count = 0


def calls_in_flight() -> int:
    return _InFlight.count


def _timed(method: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        began = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        _InFlight.count += 1
        try:
            response = await fn(request, context)
            code = context.code() or grpc.StatusCode.OK
            return response
        except BaseException:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            _InFlight.count -= 1
            GRPC_REQUESTS.labels(method, code.name if isinstance(code, grpc.StatusCode) else str(code)).inc()
            GRPC_SECONDS.labels(method).observe(time.perf_counter() - began)

    return handler


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times unary and client-streaming RPCs."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        return wrap_handler(handler, lambda fn: _timed(method, fn))
