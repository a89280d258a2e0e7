"""Every error of the API is JSON: {"status": "error", "message": ..., "error": ...} with the right code.

`error` repeats the message for the TuneScout clients, which display `response.error`. The catch-all
middleware sits inside CORS, so even an unexpected 500 carries the CORS headers and a JSON body.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success: HTTP `status_code`, a message that says what to do, extra fields."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        status: str = "error",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.status = status
        self.headers = headers
        self.extra = extra


def error_body(message: str, status: str = "error", **extra: Any) -> dict[str, Any]:
    return {"status": status, "message": message, "error": message, **extra}


def _default_message(code: int) -> str:
    return {
        404: "Endpoint not found",
        405: "Method not allowed",
        413: "Upload too large",
        429: "Too many requests",
    }.get(code, "Request failed")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.message, exc.status, **exc.extra), exc.status_code, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = (
            exc.detail if isinstance(exc.detail, str) and exc.detail else _default_message(exc.status_code)
        )
        if exc.status_code == 404 and message == "Not Found":
            message = f"Endpoint not found: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} not allowed on {request.url.path}"
        return JSONResponse(error_body(message), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(error_body("Bad request: " + "; ".join(parts)), 400)


class CatchAllMiddleware:
    """Turns an unexpected exception into a JSON 500 (logged with its traceback)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            body = json.dumps(error_body("Internal server error; the incident is logged")).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
