"""The FastAPI application: routers, CORS, the upload limit, JSON errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from services.gateway.backends import Backends
from services.gateway.errors import CatchAllMiddleware, install_error_handlers
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import fetch, fingerprint, health, recognize
from services.gateway.settings import GatewaySettings
from services.gateway.state import GatewayState
from services.gateway.tracing import HttpMetricsMiddleware, RequestIdMiddleware
from services.gateway.uploads import UploadLimitMiddleware
from tunescout.common.config import Config


def create_app(settings: GatewaySettings, config: Config, fingerprint_token: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backends = Backends(
            settings.fingerprinter_address, settings.matcher_address, settings.results_address
        )
        app.state.gateway = GatewayState(settings, config, backends, RateLimiter(config), fingerprint_token)
        try:
            yield
        finally:
            await backends.close()

    app = FastAPI(
        title="tunescout",
        summary="Music recognition: the TuneScout API",
        version="1",
        lifespan=lifespan,
    )
    for module in (recognize, fetch, fingerprint, health):
        app.include_router(module.router)
    install_error_handlers(app)
    # added last = outermost: CORS headers go on every answer, errors and 413s included
    app.add_middleware(UploadLimitMiddleware, max_bytes=config.max_file_size_bytes)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)  # outside the others: errors and 413s carry the id too
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(config.allowed_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Requested-With"],
        expose_headers=["Retry-After", "X-Request-ID"],
        max_age=600,
    )
    return app
