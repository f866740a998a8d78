"""What both gRPC services share: the metadata, the status an ossfleet error ends a call with, and the one
interceptor every RPC passes through (:func:`rpc`): it authenticates the caller from the ``authorization``
metadata (as the service's ``authenticate`` says: a tenant's key, or an admin's), runs the method, and turns
a typed error into its status and an unexpected one into UNAVAILABLE (Redis) or INTERNAL with an error id.

It wraps the methods themselves, not a ``grpc.aio`` server, because two servers call them: the gateway's
own (``grpc_server``) and, with ``endpoints.grpc_server: serve``, Ray Serve's gRPC proxy through the
deployment's methods. A refused call changes nothing in Redis, as over HTTP.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from ossfleet.errors import OssfleetError, from_unexpected

log = logging.getLogger("ossfleet.grpc")


def metadata(ctx: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in ctx.invocation_metadata()}


def status_of(e: OssfleetError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The gRPC status an ossfleet error ends a call with: code, message, trailers (``retry-after``)."""
    headers = e.headers()
    trailers = (("retry-after", headers["retry-after"]),) if "retry-after" in headers else ()
    return getattr(grpc.StatusCode, e.grpc_code), e.message, trailers


def abort_with(ctx: Any, e: OssfleetError) -> None:
    """Put an ossfleet error on the call as its status.

    A unary method then returns; a streaming one re-raises, since Ray Serve
    carries a stream's status to the client only when the method raises (the
    gateway's own server turns that raise into the same status: grpc_server.py).
    """
    code, details, trailers = status_of(e)
    ctx.set_code(code)
    ctx.set_details(details)
    if trailers:
        ctx.set_trailing_metadata(trailers)


@dataclass(frozen=True)
class Call:
    """One call as a method sees it: its context, its metadata, and who made it (what ``authenticate``
    returned: a tenant's config, an admin's name)."""

    ctx: Any
    md: dict[str, str]
    who: Any


class Authenticating(Protocol):
    async def authenticate(self, authorization: str | None) -> Any: ...


def rpc(empty: Callable[[], Any] | None = None) -> Callable[[Any], Any]:
    """The interceptor, as a decorator: ``method(self, req, call)`` becomes a gRPC handler ``(self, req, ctx)``.

    A unary method that fails returns ``empty()`` with the status set; a streaming one (``empty`` None)
    raises its typed error after setting the status, as Serve's proxy needs.
    """

    def wrap(method: Any) -> Any:
        name = method.__name__

        async def enter(self: Authenticating, ctx: Any) -> Call:
            md = metadata(ctx)
            return Call(ctx, md, await self.authenticate(md.get("authorization")))

        if inspect.isasyncgenfunction(method):

            @functools.wraps(method)
            async def stream(self: Authenticating, req: Any, ctx: Any) -> AsyncIterator[Any]:
                try:
                    async for item in method(self, req, await enter(self, ctx)):
                        yield item
                except OssfleetError as e:
                    abort_with(ctx, e)
                    raise
                except Exception as e:
                    err = from_unexpected(e, log, name)
                    abort_with(ctx, err)
                    raise err from None

            return stream

        @functools.wraps(method)
        async def unary(self: Authenticating, req: Any, ctx: Any) -> Any:
            try:
                return await method(self, req, await enter(self, ctx))
            except Exception as e:
                abort_with(ctx, e if isinstance(e, OssfleetError) else from_unexpected(e, log, name))
                return empty() if empty is not None else None

        return unary

    return wrap
