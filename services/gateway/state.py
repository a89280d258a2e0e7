"""What the routes share, handed to them as FastAPI dependencies (tests override `get_state`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.gateway.backends import Backends
from services.gateway.ratelimit import RateLimiter
from services.gateway.settings import GatewaySettings
from tunescout.common.config import Config


@dataclass
class GatewayState:
    settings: GatewaySettings
    config: Config
    backends: Backends
    limiter: RateLimiter
    fingerprint_token: str


def get_state(request: Request) -> GatewayState:
    return request.app.state.gateway


State = Annotated[GatewayState, Depends(get_state)]


def client_ip(request: Request) -> str:
    """The client's address (uvicorn resolves X-Forwarded-For from trusted proxies)."""
    return request.client.host if request.client else "unknown"
