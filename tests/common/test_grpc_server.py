"""Graceful stop: calls in flight are counted, and the drain waits for them before the server stops."""

import asyncio

import grpc

from tunescout.common import grpc_server
from tunescout.common.metrics import _timed, calls_in_flight


class _Context:
    def code(self) -> grpc.StatusCode | None:
        return None


def test_drain_waits_for_the_calls_in_flight_then_for_their_responses(monkeypatch):
    monkeypatch.setattr(grpc_server, "RESPONSE_FLUSH_S", 0.05)

    async def scenario() -> None:
        release = asyncio.Event()

        async def slow(request: object, context: object) -> str:
            await release.wait()
            return "done"

        async def failing(request: object, context: object) -> str:
            raise RuntimeError("handler failed")

        handler = _timed("/test/Slow", slow)
        call = asyncio.create_task(handler(None, _Context()))
        await asyncio.sleep(0)
        assert calls_in_flight() == 1
        drain = asyncio.create_task(grpc_server._drain(5.0))
        await asyncio.sleep(0.1)
        assert not drain.done()  # the call still runs
        release.set()
        assert await call == "done"
        left = await drain
        assert calls_in_flight() == 0 and 4.0 < left < 5.0
        try:
            await _timed("/test/Failing", failing)(None, _Context())
        except RuntimeError:
            pass
        assert calls_in_flight() == 0  # a failing handler is counted out too
        assert await grpc_server._drain(0.0) == 0.0  # no grace: no wait

    asyncio.run(scenario())
