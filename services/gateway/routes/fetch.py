"""GET /api/fetch/{token}: a stored recognition result."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.gateway.backends import ResultNotFound
from services.gateway.errors import ApiError
from services.gateway.state import State, client_ip

router = APIRouter(prefix="/api", tags=["fetch"])


@router.get("/fetch/{token}", summary="Fetch a stored recognition result")
async def fetch(token: str, request: Request, state: State) -> dict[str, Any]:
    await state.limiter.check("fetching_results", client_ip(request))
    try:
        result = await state.backends.get_result(token, state.settings.recognize_timeout_s)
    except ResultNotFound:
        raise ApiError(404, "The requested result could not be found; check the token") from None
    result["token"] = token
    return result
