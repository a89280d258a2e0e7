"""POST /api/fingerprint: store a track (Bearer token required)."""

from __future__ import annotations

import hmac
import logging
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.gateway.errors import ApiError, error_body
from services.gateway.state import State, client_ip
from services.gateway.uploads import chunks, read_form
from tunescout.fingerprinter.v1 import fingerprinter_pb2 as fp_pb
from tunescout.matcher.v1 import matcher_pb2 as m_pb

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["fingerprint"])

_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "title": {"type": "string", "description": "default: the file name's stem"},
                        "artist": {"type": "string"},
                        "album": {"type": "string"},
                        "year": {"type": "integer"},
                    },
                }
            }
        },
    }
}
_MAX_TEXT = 512


def _check_token(request: Request, expected: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() != "bearer" or not supplied.strip():
        raise ApiError(
            401, "Token missing: send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(supplied.strip().encode(), expected.encode()):
        raise ApiError(401, "Token invalid", headers={"WWW-Authenticate": "Bearer"})


def _text(form: Any, name: str, default: str = "") -> str:
    value = form.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be text, not a file")
    value = value.strip()
    if len(value) > _MAX_TEXT:
        raise ApiError(400, f"'{name}' is longer than {_MAX_TEXT} characters")
    return value or default


@router.post("/fingerprint", openapi_extra=_FORM_SCHEMA, summary="Fingerprint and store a track")
async def fingerprint(request: Request, state: State) -> JSONResponse:
    await state.limiter.check("fingerprinting", client_ip(request))
    if not state.config.fingerprinting_allowed:
        raise ApiError(403, "Fingerprinting is not allowed on this server (fingerprinting.allow is false)")
    _check_token(request, state.fingerprint_token)
    upload = await read_form(request)
    form = upload.form
    title = _text(form, "title") or PurePath(upload.file_name).stem.strip() or "untitled"
    year_text = _text(form, "year")
    year = 0
    if year_text:
        if not year_text.isdigit() or not 0 < int(year_text) < 10000:
            raise ApiError(400, f"'year' must be a year such as 1999, got {year_text!r}")
        year = int(year_text)
    timeout = state.settings.ingest_timeout_s
    options = fp_pb.FingerprintOptions(role=fp_pb.ROLE_REFERENCE, file_name=upload.file_name)
    fp = await state.backends.fingerprint(chunks(upload.file), options, timeout)
    stored = await state.backends.ingest(
        m_pb.IngestRequest(
            metadata=m_pb.TrackMetadata(
                file_sha1=fp.file_sha1,
                title=title,
                artist=_text(form, "artist"),
                album=_text(form, "album"),
                year=year,
                duration_s=fp.duration_s,
            ),
            hashes_u32le=fp.fingerprint.hashes_u32le,
            offsets_frames_i32le=fp.fingerprint.offsets_frames_i32le,
            peaks=fp.fingerprint.peaks,
            fingerprint_version=fp.fingerprint_version,
        ),
        timeout,
    )
    track = stored.track
    fields = {
        "file_sha1": fp.file_sha1,
        "blob_sha1": fp.file_sha1,
        "song_id": track.track_id,
        "song_name": track.metadata.title,
        "shard": track.shard,
    }
    if stored.already_present:
        return JSONResponse(error_body("Already fingerprinted", "already_fingerprinted", **fields), 409)
    logger.info("fingerprinted %r (%s) for %s", title, fp.file_sha1, client_ip(request))
    return JSONResponse(
        {
            "status": "success",
            "message": f"Fingerprinted {title!r}",
            **fields,
            "hashes": track.n_hashes,
            "duration_seconds": round(fp.duration_s, 3),
        }
    )
