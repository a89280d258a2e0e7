"""Uploads: the size limit, enforced while the body streams in, and reading the multipart form.

A body whose Content-Length is over the limit is refused before a byte of it is read; a chunked body is
counted as it arrives and refused the moment it passes the limit. Starlette spools file parts over 1 MB to a
temporary file, so an upload never sits whole in memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.errors import ApiError, error_body

CHUNK_BYTES = 1024 * 1024  # bytes per gRPC message of a streamed upload
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the small fields beside the file
FILE_FIELDS = ("file", "blob")  # `blob`: the TuneScout web UI's microphone recordings


class UploadTooLarge(ApiError):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(413, f"Upload too large: the limit is {_megabytes(limit_bytes)} MB")


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):g}"


class UploadLimitMiddleware:
    """Refuses request bodies over `max_bytes` (plus form overhead) with 413, without reading them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int | None) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_bytes is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes + FORM_OVERHEAD_BYTES
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_json(send, 413, error_body(UploadTooLarge(self.max_bytes).message))
                return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise UploadTooLarge(self.max_bytes)  # type: ignore[arg-type]
            return message

        await self.app(scope, counting_receive, send)


async def _send_json(send: Send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


@dataclass
class Upload:
    file: UploadFile
    file_name: str
    form: FormData


async def read_form(request: Request) -> Upload:
    """The multipart form with its audio file (field `file`, or `blob` from the web UI's recorder)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "Send the audio as multipart/form-data with the file in a field named 'file'")
    form = await request.form(max_files=4, max_fields=32)
    for field in FILE_FIELDS:
        value = form.get(field)
        if isinstance(value, UploadFile):
            return Upload(file=value, file_name=value.filename or "", form=form)
    raise ApiError(400, "No file part in the request: send the audio in a form field named 'file'")


async def chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    await upload.seek(0)
    while True:
        chunk = await upload.read(CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


def seconds_field(form: FormData, name: str, *, positive: bool) -> float | None:
    """A form field in seconds ("12", "12.35"); None when absent or empty. 400 when malformed."""
    raw = form.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str):
        raise ApiError(400, f"'{name}' must be a number of seconds, not a file")
    try:
        value = float(raw.strip())
    except ValueError:
        raise ApiError(
            400, f"'{name}' must be a number of seconds such as 12 or 12.35, got {raw!r}"
        ) from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "greater than 0" if positive else "0 or more"
        raise ApiError(400, f"'{name}' must be {bound} seconds, got {raw!r}")
    return value
