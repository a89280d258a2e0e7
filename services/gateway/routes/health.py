"""GET /api/health: whether the gateway and each gRPC service are serving (for probes and `tunescout up`)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.gateway.state import State

router = APIRouter(prefix="/api", tags=["health"])


async def _serving(channel: grpc.aio.Channel) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
    except grpc.aio.AioRpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@router.get("/health", summary="Health of the gateway and the services behind it")
async def health(state: State) -> JSONResponse:
    names = ("fingerprinter", "matcher", "results")
    serving = await asyncio.gather(*(_serving(ch) for ch in state.backends.channels))
    services: dict[str, Any] = {
        name: "serving" if ok else "not serving" for name, ok in zip(names, serving, strict=True)
    }
    ok = all(serving)
    return JSONResponse(
        {
            "status": "success" if ok else "error",
            "services": services,
            "message": "all services serving" if ok else "some services are not serving",
        },
        200 if ok else 503,
    )
