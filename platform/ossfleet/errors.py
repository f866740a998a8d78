"""Typed errors that carry what the caller needs to act on them.

Each error knows its OpenAI-style ``type``/``code``, its HTTP status and its
gRPC status name, so that both APIs report the same failure the same way.
Messages never include a prompt, a completion or a key.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any


def _rebuild(cls: type[OssfleetError], message: str, param: str | None, details: dict[str, Any]) -> OssfleetError:
    return cls(message, param=param, **details)


class OssfleetError(Exception):
    """Base class: a request that ossfleet refused or could not finish."""

    http_status = 500
    grpc_code = "INTERNAL"
    error_type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by keyword (Ray ships exceptions between processes: Serve's gRPC
        # proxy failed to rebuild a RateLimited from its args alone and answered INTERNAL).
        return (_rebuild, (type(self), self.message, self.param, self.details))

    def to_openai(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(OssfleetError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    error_type = "invalid_request_error"
    code = "invalid_request"


class RequestTooLarge(InvalidRequest):
    http_status = 413
    code = "request_too_large"


class ContextTooLong(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationFailed(OssfleetError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(OssfleetError):
    http_status = 403
    grpc_code = "PERMISSION_DENIED"
    error_type = "permission_error"
    code = "permission_denied"


class ModelNotFound(OssfleetError):
    http_status = 404
    grpc_code = "NOT_FOUND"
    error_type = "invalid_request_error"
    code = "model_not_found"


class Conflict(OssfleetError):
    http_status = 409
    grpc_code = "ALREADY_EXISTS"
    error_type = "invalid_request_error"
    code = "conflict"


class StillInUse(Conflict):
    """The target still has work that depends on it (a tenant with requests in flight): retry once it ends."""

    grpc_code = "FAILED_PRECONDITION"
    code = "still_in_use"


class NotFound(OssfleetError):
    http_status = 404
    grpc_code = "NOT_FOUND"
    error_type = "invalid_request_error"
    code = "not_found"


class RateLimited(OssfleetError):
    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, round(self.retry_after_s + 0.499)))}


class BudgetExhausted(OssfleetError):
    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    error_type = "insufficient_quota"
    code = "budget_exhausted"


class QueueFull(OssfleetError):
    http_status = 503
    grpc_code = "RESOURCE_EXHAUSTED"
    error_type = "server_error"
    code = "queue_full"

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"}


class Unavailable(OssfleetError):
    http_status = 503
    grpc_code = "UNAVAILABLE"
    error_type = "server_error"
    code = "unavailable"

    def headers(self) -> dict[str, str]:
        return {"retry-after": "2"}


class RequestFailed(OssfleetError):
    """A request was accepted, then failed for good (dead-lettered)."""

    http_status = 500
    grpc_code = "INTERNAL"
    code = "generation_failed"


class LeaseLost(Exception):
    """A replica's lease on a request is gone (expired and taken back, or finished)."""


class InternalError(OssfleetError):
    """Something unexpected: the caller gets an error id, the log gets the traceback under it."""

    code = "internal_error"


def from_unexpected(e: BaseException, log: logging.Logger, where: str) -> OssfleetError:
    """The typed error an unexpected exception becomes at an API's edge.

    Redis unreachable or too slow: :class:`Unavailable` (503 / UNAVAILABLE, retry advice).
    Anything else: :class:`InternalError` with a generic message and an error id; the
    traceback goes to the log under that id, never to the caller.
    """
    import redis.exceptions

    if isinstance(e, OssfleetError):
        return e
    if isinstance(e, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError)):
        log.warning("event=redis_unavailable where=%s error=%r", where, type(e).__name__)
        return Unavailable("the queue store (Redis) is unavailable; retry in a few seconds")
    error_id = uuid.uuid4().hex[:16]
    log.error("event=internal_error where=%s error_id=%s", where, error_id, exc_info=e)
    return InternalError(f"internal error; quote error id {error_id} to the operator", error_id=error_id)
