"""Every HTTP request gets a request id (the client's X-Request-ID when sane, else a new one): set for the
logs of this request, sent to the services in gRPC metadata, and returned in the X-Request-ID header."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunescout.common.request_id import HTTP_HEADER, REQUEST_ID, new_request_id

_HEADER = HTTP_HEADER.lower().encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == _HEADER), None)
        rid = new_request_id(incoming)
        token = REQUEST_ID.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (_HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
