"""OpenAI's /v1/files and /v1/batches, on the gateway's HTTP app.

The official ``openai`` client's ``files.create`` (multipart upload),
``batches.create``, ``batches.retrieve``, ``batches.list``, ``batches.cancel``
and ``files.content`` work unchanged. ossfleet's own options go in the
create body (``extra_body`` in the client): ``mode`` ("queue" or
"dedicated") and ``skip_invalid_lines``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ossfleet.api.httpio import read_body
from ossfleet.errors import InvalidRequest, RequestTooLarge
from ossfleet.protocol.openai import pydantic_error

if TYPE_CHECKING:
    from ossfleet.batch.service import BatchService
    from ossfleet.control.gateway import GatewayCore


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: Annotated[str, Field(min_length=1, max_length=128)]
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = None
    mode: Literal["queue", "dedicated"] = "queue"
    skip_invalid_lines: bool = False


def add_batch_routes(
    app: FastAPI, get_core: Callable[[], GatewayCore], get_batches: Callable[[], BatchService]
) -> None:
    async def caller(request: Request) -> tuple[GatewayCore, Any]:
        core = get_core()
        return core, await core.tenant(request.headers.get("authorization"))

    async def tenant(request: Request) -> Any:
        return (await caller(request))[1]

    @app.post("/v1/files")
    async def upload(request: Request) -> JSONResponse:
        core, t = await caller(request)
        limit = core.cfg.batch.max_file_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
            raise RequestTooLarge(f"the upload is {declared} bytes; the file limit is {limit}")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidRequest("upload a file as multipart/form-data with fields 'file' and 'purpose'")
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as e:  # a malformed multipart body
            raise InvalidRequest(f"the multipart body cannot be read: {type(e).__name__}") from None
        f, purpose = form.get("file"), form.get("purpose")
        if f is None or isinstance(f, str):
            raise InvalidRequest("the form has no 'file' part", param="file")
        if not isinstance(purpose, str):
            raise InvalidRequest("the form has no 'purpose' field (use 'batch')", param="purpose")
        data = await f.read(limit + 1)
        if len(data) > limit:
            raise RequestTooLarge(f"the file exceeds the limit of {limit} bytes")
        rec = await get_batches().upload(t, f.filename or "upload.jsonl", purpose, data)
        return JSONResponse(rec.to_openai())

    @app.get("/v1/files")
    async def list_files(request: Request) -> JSONResponse:
        t = await tenant(request)
        files = await get_batches().store.files(t.name)
        return JSONResponse({"object": "list", "data": [f.to_openai() for f in files], "has_more": False})

    @app.get("/v1/files/{file_id}")
    async def get_file(request: Request, file_id: str) -> JSONResponse:
        t = await tenant(request)
        return JSONResponse((await get_batches().store.file(t.name, file_id)).to_openai())

    @app.get("/v1/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> Response:
        t = await tenant(request)
        return Response(await get_batches().content(t, file_id), media_type="application/jsonl")

    @app.delete("/v1/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> JSONResponse:
        t = await tenant(request)
        f = await get_batches().delete_file(t, file_id)
        return JSONResponse({"id": f.id, "object": "file", "deleted": True})

    @app.post("/v1/batches")
    async def create_batch(request: Request) -> JSONResponse:
        core, t = await caller(request)
        data = await read_body(request, core.cfg.limits.max_request_bytes)
        try:
            body = CreateBatch.model_validate(data)
        except ValidationError as e:
            raise pydantic_error(e) from None
        job = await get_batches().create(
            t, body.input_file_id, body.endpoint, body.completion_window,
            metadata=body.metadata, mode=body.mode, skip_invalid_lines=body.skip_invalid_lines,
        )  # fmt: skip
        return JSONResponse(job.to_openai())

    @app.get("/v1/batches")
    async def list_batches(request: Request) -> JSONResponse:
        t = await tenant(request)
        raw_limit = request.query_params.get("limit", "20")
        if not raw_limit.isdigit():
            raise InvalidRequest("limit must be an integer between 1 and 100", param="limit")
        jobs, more = await get_batches().jobs(t, int(raw_limit), request.query_params.get("after"))
        data = [j.to_openai() for j in jobs]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        )

    @app.get("/v1/batches/{batch_id}")
    async def get_batch(request: Request, batch_id: str) -> JSONResponse:
        t = await tenant(request)
        return JSONResponse((await get_batches().get(t, batch_id)).to_openai())

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str) -> JSONResponse:
        t = await tenant(request)
        return JSONResponse((await get_batches().cancel(t, batch_id)).to_openai())
