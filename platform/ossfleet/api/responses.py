"""OpenAI's Responses API (``/v1/responses``) over the gateway core, as OpenAI's guides drive gpt-oss.

A response is one request through the same admission, priority bands, budget
and billing as a chat completion; ``ossfleet.protocol.responses`` maps it onto
a chat request and its answer onto output items and stream events.

``store`` (OpenAI's default: true) keeps the response in Redis for
``redis.response_ttl_s``, readable by its tenant only: ``GET`` and ``DELETE
/v1/responses/{id}``, and ``previous_response_id`` continues its
conversation (its input and output come first, then the new input; its
``instructions`` do not carry over, as at OpenAI). A response is stored as
``in_progress`` when admitted, so ``POST /v1/responses/{id}/cancel`` stops one
still running, from any gateway. ``background`` mode is not offered.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from ossfleet.api.httpio import read_body, request_meta
from ossfleet.control.gateway import GatewayCore
from ossfleet.control.response_store import ResponseStore
from ossfleet.errors import InvalidRequest, OssfleetError
from ossfleet.harmony import Message, ToolCall
from ossfleet.protocol.events import Outcome, fold
from ossfleet.protocol.openai import pydantic_error
from ossfleet.protocol.responses import (
    EventWriter,
    ResponseCreate,
    ResponseState,
    message_from,
    to_chat_request,
)


def responses_of(core: GatewayCore) -> ResponseStore:
    return ResponseStore(core.r, core.queue.keys, core.cfg.redis.response_ttl_s)


def _sse(ev: dict[str, Any]) -> bytes:
    return f"event: {ev['type']}\ndata: ".encode() + json.dumps(ev, separators=(",", ":")).encode() + b"\n\n"


# -- routes ---------------------------------------------------------------------------------------


def add_responses_routes(app: FastAPI, get_core: Callable[[], GatewayCore]) -> None:
    async def prior_context(core: GatewayCore, tenant: str, response_id: str | None) -> list[Message]:
        """The conversation a stored response ends (none without an id)."""
        if not response_id:
            return []
        prior = await responses_of(core).get(tenant, response_id)
        if prior["response"]["status"] == "in_progress":
            raise InvalidRequest(f"response {response_id!r} is still in progress", param="previous_response_id")
        return [message_from(m) for m in prior["context"]]

    @app.post("/v1/responses")
    async def create(request: Request) -> Response:
        core = get_core()
        tenant = await core.tenant(request.headers.get("authorization"))
        data = await read_body(request, core.cfg.limits.max_request_bytes)
        try:
            body = ResponseCreate.model_validate(data)
        except ValidationError as e:
            raise pydantic_error(e) from None
        prior = await prior_context(core, tenant.name, body.previous_response_id)
        req = to_chat_request(body, prior, request_meta(request.headers), core.cfg.limits)
        # The instructions message is not part of the stored conversation.
        req_for_context = list(req.messages[1:] if body.instructions else req.messages)
        sub = await core.submit(tenant, req)
        rid = sub.request_id
        state = ResponseState(rid, sub.model_name, body, int(time.time()))
        store = responses_of(core)
        if body.store:
            await store.put(tenant.name, rid, state.body, [])
        headers = {"x-ossfleet-request-id": rid}

        async def finish(o: Outcome | None, error: OssfleetError | None = None) -> dict[str, Any]:
            response = state.finish(o, error)
            if body.store:
                calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in (o.tool_calls if o else ()))
                answer = [Message("assistant", o.content, o.reasoning or None, calls)] if o else []
                await store.put(tenant.name, rid, response, [*req_for_context, *answer])
            return response

        if not body.stream:
            try:
                out = await core.relay.outcome_or_cancel(tenant.name, rid, sub.model_name)
            except OssfleetError as e:
                return JSONResponse(await finish(None, e), headers=headers)
            return JSONResponse(await finish(out), headers=headers)
        return StreamingResponse(
            stream(core, tenant.name, rid, sub.model_name, state, finish),
            media_type="text/event-stream",
            headers=headers,
        )

    async def stream(
        core: GatewayCore, tenant: str, rid: str, model: str, state: ResponseState,
        finish: Callable[..., Any],
    ) -> AsyncIterator[bytes]:  # fmt: skip
        writer = EventWriter(state)
        out = Outcome()
        finished = False
        try:
            for ev in writer.start():
                yield _sse(ev)
            async for e in core.relay.events(model, rid, labels=(tenant, model)):
                try:
                    fold(out, e)
                except OssfleetError as err:
                    finished = True
                    for ev in writer.end(await finish(None, err)):
                        yield _sse(ev)
                    return
                f = e.fields
                evs: list[dict[str, Any]] = []
                if e.type == "delta" and f.get("kind") in ("content", "reasoning"):
                    lps = json.loads(f["logprobs"]) if f.get("logprobs") else []
                    if f.get("text") or lps:
                        evs = writer.delta(f["kind"], f.get("text", ""), lps)
                elif e.type == "delta" and f.get("kind") == "tool_call":
                    evs = writer.tool_call({"id": f["id"], "name": f["name"], "arguments": f["arguments"]})
                elif e.type == "done":
                    finished = True
                    evs = writer.end(await finish(out))
                for ev in evs:
                    yield _sse(ev)
        finally:
            if not finished:
                core.cancel_abandoned(tenant, rid)

    @app.get("/v1/responses/{response_id}")
    async def retrieve(response_id: str, request: Request) -> JSONResponse:
        core = get_core()
        tenant = await core.tenant(request.headers.get("authorization"))
        return JSONResponse((await responses_of(core).get(tenant.name, response_id))["response"])

    @app.delete("/v1/responses/{response_id}")
    async def delete(response_id: str, request: Request) -> JSONResponse:
        core = get_core()
        tenant = await core.tenant(request.headers.get("authorization"))
        await responses_of(core).delete(tenant.name, response_id)
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})

    @app.post("/v1/responses/{response_id}/cancel")
    async def cancel(response_id: str, request: Request) -> JSONResponse:
        core = get_core()
        tenant = await core.tenant(request.headers.get("authorization"))
        record = await responses_of(core).get(tenant.name, response_id)
        if record["response"]["status"] == "in_progress":
            await core.cancel(tenant.name, response_id.removeprefix("resp_"))
            record["response"]["status"] = "cancelled"
        return JSONResponse(record["response"])
