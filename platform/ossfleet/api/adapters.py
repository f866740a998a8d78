"""LoRA adapters over HTTP: a tenant uploads, lists, reads and deletes its own.

``POST /v1/adapters`` takes ``multipart/form-data``: the fields ``model`` (the
base model) and ``name``, and PEFT's two files as the parts ``adapter_config``
(``adapter_config.json``) and ``adapter_model`` (``adapter_model.safetensors``).
The adapter is then served as the model ``<model>:<name>`` on every API, and
listed by ``/v1/models`` for its owner only. The same operations exist over
gRPC (``grpc_api``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ossfleet.errors import InvalidRequest, RequestTooLarge

if TYPE_CHECKING:
    from ossfleet.control.gateway import GatewayCore

_CONFIG_LIMIT = 1024 * 1024  # adapter_config.json: a few kB in practice


def add_adapter_routes(app: FastAPI, get_core: Callable[[], GatewayCore]) -> None:
    async def caller(request: Request) -> tuple[GatewayCore, Any]:
        core = get_core()
        return core, await core.tenant(request.headers.get("authorization"))

    @app.post("/v1/adapters")
    async def upload(request: Request) -> JSONResponse:
        core, t = await caller(request)
        limit = max((m.adapters.max_bytes for m in core.cfg.models), default=0)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + _CONFIG_LIMIT + 64 * 1024:
            raise RequestTooLarge(f"the upload is {declared} bytes; adapters may have at most {limit}")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidRequest(
                "upload an adapter as multipart/form-data with the fields 'model' and 'name' and the files "
                "'adapter_config' (adapter_config.json) and 'adapter_model' (adapter_model.safetensors)"
            )
        try:
            form = await request.form(max_files=2, max_fields=8)
        except Exception as e:  # a malformed multipart body
            raise InvalidRequest(f"the multipart body cannot be read: {type(e).__name__}") from None
        model, name = form.get("model"), form.get("name")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("the form has no 'model' field (the base model, e.g. gpt-oss-20b)", param="model")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("the form has no 'name' field (the adapter's name)", param="name")
        parts = {}
        for part, cap in (("adapter_config", _CONFIG_LIMIT), ("adapter_model", limit)):
            f = form.get(part)
            if f is None or isinstance(f, str):
                raise InvalidRequest(f"the form has no '{part}' file part", param=part)
            data = await f.read(cap + 1)
            if len(data) > cap:
                raise RequestTooLarge(f"'{part}' exceeds the limit of {cap} bytes")
            parts[part] = data
        rec = await core.upload_adapter(t, model, name, parts["adapter_config"], parts["adapter_model"])
        return JSONResponse(rec.public())

    @app.get("/v1/adapters")
    async def list_adapters(request: Request) -> JSONResponse:
        core, t = await caller(request)
        return JSONResponse({"object": "list", "data": [a.public() for a in await core.adapters.list(t.name)]})

    @app.get("/v1/adapters/{model_id}")
    async def get_adapter(request: Request, model_id: str) -> JSONResponse:
        core, t = await caller(request)
        return JSONResponse((await core.adapter(t, model_id)).public())

    @app.delete("/v1/adapters/{model_id}")
    async def delete_adapter(request: Request, model_id: str) -> JSONResponse:
        core, t = await caller(request)
        rec = await core.adapter(t, model_id)
        await core.adapters.delete(t.name, rec.model, rec.name)
        return JSONResponse({"id": rec.id, "object": "adapter", "deleted": True})
