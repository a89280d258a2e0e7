"""gRPC errors with a reason a caller can act on: a status code plus a google.rpc.ErrorInfo detail.

Servicers raise through `abort`; clients read the reason back with `error_reason`. Reasons are short
UPPER_SNAKE names (NOT_AUDIO, SHARD_UNAVAILABLE, ...) that the gateway maps to HTTP answers.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "tunescout"


async def abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, reason: str, message: str
) -> NoReturn:
    """End the call with `code`, `message` and an ErrorInfo carrying `reason`."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover (it always raises)


def error_reason(error: grpc.RpcError) -> str | None:
    """The ErrorInfo reason of a failed call, or None when it carries none (e.g. a deadline)."""
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None
