"""What every service process does first, and how a gRPC service then runs until SIGTERM."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol

from tunescout.common.grpc_server import ServiceBinding, serve
from tunescout.common.logs import setup_logging
from tunescout.common.memory import tune_malloc
from tunescout.common.metrics import start_metrics


class ProcessSettings(Protocol):
    log_format: str
    metrics_port: int


class GrpcSettings(ProcessSettings, Protocol):
    host: str
    port: int
    grace_s: float


class Lifecycle(Protocol):
    def start(self) -> Awaitable[None]: ...

    def close(self) -> Awaitable[None]: ...


def start_process(service: str, settings: ProcessSettings) -> None:
    """Logging, malloc tuning and the metrics endpoint, before anything else runs."""
    setup_logging(service, settings.log_format)
    tune_malloc()
    start_metrics(settings.metrics_port)


def run_grpc_service(binding: ServiceBinding, settings: GrpcSettings, servicer: Lifecycle) -> None:
    """Serve `binding` until SIGTERM/SIGINT (see grpc_server.serve)."""
    asyncio.run(
        serve([binding], settings.host, settings.port, servicer.start, servicer.close, settings.grace_s)
    )
