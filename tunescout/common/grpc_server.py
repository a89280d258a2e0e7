"""gRPC server start-up shared by the services: health, reflection, message limits, graceful SIGTERM.

`create_server` only builds and binds (tests use port 0); `serve` runs a service until SIGTERM or SIGINT:
health goes NOT_SERVING at once, then in-flight calls get `grace_s` to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tunescout.common.metrics import MetricsInterceptor, calls_in_flight
from tunescout.common.request_id import RequestIdInterceptor

logger = logging.getLogger(__name__)

# a 3-hour track's fingerprints are ~25 MB; uploads stream in smaller chunks
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to add: the full service name (for health and reflection) and its add_*_to_server."""

    name: str
    add: Callable[[grpc.aio.Server], None]


class Health:
    """The standard health service of one server: overall ("") and per service name."""

    def __init__(self, names: Sequence[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self.names = ["", *names]

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self.names:
            await self.servicer.set(name, status)

    async def shutdown(self) -> None:
        await self.servicer.enter_graceful_shutdown()


async def create_server(
    bindings: Sequence[ServiceBinding], host: str, port: int
) -> tuple[grpc.aio.Server, int, Health]:
    """A bound, not yet started server (port 0 picks a free port) with health NOT_SERVING."""
    server = grpc.aio.server(
        options=CHANNEL_OPTIONS, interceptors=[RequestIdInterceptor(), MetricsInterceptor()]
    )
    for binding in bindings:
        binding.add(server)
    names = [b.name for b in bindings]
    state = Health(names)
    health_pb2_grpc.add_HealthServicer_to_server(state.servicer, server)
    await state.set_serving(False)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return server, bound, state


async def _drain(grace_s: float) -> float:
    """Wait (up to `grace_s`) until no handler runs, then a moment more for their responses to reach the
    clients. `server.stop()` alone closed connections as soon as the last call had handed its response
    to the transport: a client still reading a large one got "Connection reset by peer" (about one
    fingerprinting of a 10-minute file in 8 in tests/e2e/test_shutdown.py). Returns the grace left.
    New calls are still served meanwhile: health says NOT_SERVING, so balancers send no more."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while calls_in_flight() and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(min(RESPONSE_FLUSH_S, max(0.0, deadline - loop.time())))
    return max(0.0, deadline - loop.time())


RESPONSE_FLUSH_S = 0.3


async def serve(
    bindings: Sequence[ServiceBinding],
    host: str,
    port: int,
    start: Callable[[], Awaitable[None]],
    close: Callable[[], Awaitable[None]],
    grace_s: float,
) -> None:
    """Run until SIGTERM/SIGINT. `start` opens the stores (health turns SERVING after it), `close` runs after
    in-flight calls have finished or the grace period has passed."""
    server, bound, state = await create_server(bindings, host, port)
    await server.start()
    logger.info("listening on %s:%d (%s)", host, bound, ", ".join(b.name for b in bindings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        starting = asyncio.create_task(start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a start-up failure ends the process with its message
            await state.set_serving(True)
            logger.info("serving")
            await stopping
        else:
            starting.cancel()
        logger.info("stopping: NOT_SERVING, %.1f s for calls in flight", grace_s)
    finally:
        await state.shutdown()
        await server.stop(await _drain(grace_s))
        await close()
        logger.info("stopped")


def channel(address: str) -> grpc.aio.Channel:
    """A client channel with the same message limits as the servers."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
