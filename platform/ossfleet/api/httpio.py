"""What every HTTP route of the gateway shares: reading a bounded JSON body, answering an error.

Used by the OpenAI adapter (``openai_api``, ``responses_api``) and the batch routes (``batch/http``).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ossfleet.errors import OssfleetError, RequestTooLarge
from ossfleet.protocol.chat import RequestMeta
from ossfleet.protocol.openai import parse_json


async def read_body(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object body; a body over ``limit`` bytes is refused before it is all read."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
    return parse_json(raw)


def error_response(e: OssfleetError) -> JSONResponse:
    return JSONResponse(e.to_openai(), status_code=e.http_status, headers=e.headers())


def request_meta(headers: Any) -> RequestMeta:
    """The request options HTTP carries in headers: `x-ossfleet-priority` and `Idempotency-Key`."""
    return RequestMeta(
        priority=headers.get("x-ossfleet-priority"), idempotency_key=headers.get("idempotency-key", ""),
        end_user=headers.get("x-ossfleet-user", ""),
    )  # fmt: skip
