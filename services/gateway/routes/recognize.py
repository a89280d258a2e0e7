"""POST /api/recognize: which track is this clip, where in it, how sure."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request

from services.gateway import responses
from services.gateway.errors import ApiError
from services.gateway.state import State, client_ip
from services.gateway.uploads import chunks, read_form, seconds_field
from tunescout.fingerprinter.v1 import fingerprinter_pb2 as fp_pb
from tunescout.matcher.v1 import matcher_pb2 as m_pb

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["recognize"])

_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "audio or video"},
                        "start": {"type": "number", "description": "seconds into the upload to start at"},
                        "duration": {
                            "type": "number",
                            "description": "seconds to read (capped by max_duration)",
                        },
                    },
                }
            }
        },
    }
}


@router.post("/recognize", openapi_extra=_FORM_SCHEMA, summary="Recognise a clip")
async def recognize(request: Request, state: State) -> dict[str, Any]:
    await state.limiter.check("recognizing", client_ip(request))
    upload = await read_form(request)
    start = seconds_field(upload.form, "start", positive=False) or 0.0
    duration = seconds_field(upload.form, "duration", positive=True)
    cap = state.config.max_duration_s
    if cap is not None:
        duration = cap if duration is None else min(duration, cap)
    timeout = state.settings.recognize_timeout_s
    options = fp_pb.FingerprintOptions(
        role=fp_pb.ROLE_QUERY, start_s=start, duration_s=duration or 0.0, file_name=upload.file_name
    )
    fingerprint = await state.backends.fingerprint(chunks(upload.file), options, timeout)
    peaks = fingerprint.peaks
    matched = await state.backends.match(
        m_pb.MatchRequest(
            frames_i32le=peaks.frames_i32le,
            freq_hz_f64le=peaks.freq_hz_f64le,
            magnitude_f32le=peaks.magnitude_f32le,
            n_frames=peaks.n_frames,
            fingerprint_version=fingerprint.fingerprint_version,
        ),
        timeout,
    )
    body = responses.recognition(list(matched.matches), list(matched.unavailable_shards))
    if not body["results"]:
        body["token"] = None
        return body
    try:
        body["token"] = await state.backends.put_result(body, timeout)
    except ApiError as exc:
        logger.warning("recognition result not saved: %s", exc.message)
        body["token"] = None
        body["message"] += "; the result could not be saved, so it has no token (the results store is down)"
    return body
