"""The HTTP app, assembled in one place: the routers of every HTTP API over the gateway core of this process.

OpenAI's chat and completions and the models list (``api/openai``), the Responses API (``api/responses``),
files and batches (``api/batches``), adapters (``api/adapters``), the admin API and its console
(``api/admin``); one error handler for them all (a typed error's status and body; anything else a 503 for
Redis or a 500 with an error id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ossfleet.api.adapters import add_adapter_routes
from ossfleet.api.admin import add_admin_routes
from ossfleet.api.batches import add_batch_routes
from ossfleet.api.httpio import error_response
from ossfleet.api.openai import add_openai_routes
from ossfleet.api.responses import add_responses_routes
from ossfleet.batch.service import BatchService
from ossfleet.control.gateway import GatewayCore
from ossfleet.errors import OssfleetError, from_unexpected

log = logging.getLogger("ossfleet.http")

_core: GatewayCore | None = None
_batches: BatchService | None = None


def set_current(core: GatewayCore, batches: BatchService) -> None:
    """Install this process's GatewayCore and batch service.

    Ray Serve ships the ingress app and the deployment class by value, with
    copies of their module globals; functions of this module travel by
    reference, so this setter and :func:`current_core` share one global.
    """
    global _core, _batches
    _core, _batches = core, batches


def current_core() -> GatewayCore:
    if _core is None:
        raise RuntimeError("the gateway is not initialised")
    return _core


def current_batches() -> BatchService:
    if _batches is None:
        raise RuntimeError("the gateway is not initialised")
    return _batches


def create_app(get_core: Callable[[], GatewayCore], get_batches: Callable[[], BatchService]) -> FastAPI:
    """The app, over the GatewayCore and batch service that ``get_core`` and ``get_batches`` return (the
    deployment's own)."""
    app = FastAPI(title="ossfleet", version="v1", docs_url=None, redoc_url=None)

    @app.exception_handler(OssfleetError)
    async def _ossfleet_error(request: Request, e: OssfleetError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        # Redis down: 503 with retry advice; anything else: a 500 with an error id, no traceback.
        return error_response(from_unexpected(e, log, request.url.path))

    @app.get("/health")
    async def health(request: Request) -> Response:
        core = get_core()
        ok = await core.ping()
        return JSONResponse({"redis": ok}, status_code=200 if ok else 503)

    add_openai_routes(app, get_core)
    add_batch_routes(app, get_core, get_batches)
    add_adapter_routes(app, get_core)
    add_admin_routes(app, get_core, get_batches)
    add_responses_routes(app, get_core)
    return app
