"""A real gRPC server (grpc.aio, port 0) running a servicer on its own event loop in a thread, so that tests
call it with ordinary blocking stubs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence

import grpc

from tunescout.common.grpc_server import CHANNEL_OPTIONS, ServiceBinding, create_server


class ServerThread:
    def __init__(
        self,
        bindings: Sequence[ServiceBinding],
        start: Callable[[], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self._bindings = bindings
        self._start = start
        self._close = close
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(300)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.port}", options=CHANNEL_OPTIONS)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            server, self.port, health = await create_server(self._bindings, "127.0.0.1", 0)
            await server.start()
            await self._start()
            await health.set_serving(True)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stop.wait()
        await health.shutdown()
        await server.stop(1.0)
        await self._close()
