"""The OpenAI-compatible routes: ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions``.

A thin adapter over ``ossfleet.protocol.openai`` (schemas, conversion, bodies) and the gateway core. The
body is read with a size limit and parsed strictly, so every bad request gets an OpenAI-style error body
with the right status and the field to fix, and nothing reaches Redis. Streams are server-sent events, each
carrying an id a client can resume from. ``api/http`` assembles the app.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from ossfleet.adapters.store import AdapterRecord
from ossfleet.api.httpio import read_body, request_meta
from ossfleet.control.gateway import GatewayCore
from ossfleet.errors import ModelNotFound, NotFound, OssfleetError
from ossfleet.protocol.chat import ChatRequest
from ossfleet.protocol.events import Outcome, StreamEvent, fold
from ossfleet.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    chat_logprobs,
    completion_body,
    completion_logprobs,
    openai_finish,
    pydantic_error,
    resume_positions,
    text_completion_body,
    to_chat_request,
    to_completion_request,
    usage_body,
)

log = logging.getLogger("ossfleet.http")


def add_openai_routes(app: FastAPI, get_core: Callable[[], GatewayCore]) -> None:
    """``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions``."""

    def model_object(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "ossfleet"}

    def adapter_object(a: AdapterRecord) -> dict[str, Any]:
        return {"id": a.id, "object": "model", "created": a.created_at, "owned_by": a.tenant, "parent": a.model}

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        """The served models, then the caller's A/B aliases and own adapters (as ``<model>:<adapter>``)."""
        core = get_core()
        t = await core.tenant(request.headers.get("authorization"))
        names = [m.name for m in core.cfg.models] + ["auto"]
        aliases = [{**model_object(a), "owned_by": t.name} for a in sorted(t.aliases)]
        mine = [adapter_object(a) for a in await core.adapters.list(t.name)]
        return JSONResponse({"object": "list", "data": [model_object(n) for n in names] + aliases + mine})

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> JSONResponse:
        core = get_core()
        t = await core.tenant(request.headers.get("authorization"))
        names = [m.name for m in core.cfg.models] + ["auto"]
        if model_id in t.aliases:
            return JSONResponse({**model_object(model_id), "owned_by": t.name})
        if ":" in model_id:
            try:
                return JSONResponse(adapter_object(await core.adapter(t, model_id)))
            except NotFound:
                pass
        if model_id not in names:
            raise ModelNotFound(f"model {model_id!r} does not exist; available: {names}", param="model")
        return JSONResponse(model_object(model_id))

    def endpoint(
        schema: type[ChatCompletionRequest] | type[CompletionRequest],
        to_request: Callable[[Any, Any, GatewayCore], ChatRequest],
        sse: Callable[..., AsyncIterator[bytes]],
        whole: Callable[..., dict[str, Any]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """The route of one completions API: the request's schema, its conversion, its stream and its body."""

        async def serve(request: Request) -> Response:
            """Authenticate, parse, validate, submit; then stream (SSE) or answer whole."""
            core = get_core()
            tenant = await core.tenant(request.headers.get("authorization"))
            data = await read_body(request, core.cfg.limits.max_request_bytes)
            try:
                body: Any = schema.model_validate(data)
            except ValidationError as e:
                raise pydantic_error(e) from None
            req = to_request(body, request.headers, core)
            body.check_choices(1 + len(req.more_prompts), core.cfg.limits.max_choices)
            sub = await core.submit(tenant, req)
            rids = list(sub.request_ids or (sub.request_id,))
            created = int(time.time())
            headers = {"x-ossfleet-request-id": ",".join(rids)}
            logprobs = req.logprobs is not None
            if body.stream:
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                # A client reconnecting (same Idempotency-Key, so the same requests) continues where it was.
                after = resume_positions(request.headers.get("last-event-id"), len(rids)) if sub.duplicate else None
                # With an Idempotency-Key the client may come back for the rest: a disconnect does not cancel.
                keep = bool(req.idempotency_key)
                stream = sse(core, tenant.name, rids, sub.model_name, created, include_usage, logprobs, after, keep)
                return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
            cancel = not req.idempotency_key
            outs = await core.relay.outcomes_or_cancel(tenant.name, rids, sub.model_name, cancel=cancel)
            return JSONResponse(whole(sub.request_id, sub.model_name, created, outs, logprobs), headers=headers)

        return serve

    app.add_api_route("/v1/completions", endpoint(
        CompletionRequest,
        lambda body, headers, core: to_completion_request(body, request_meta(headers), core.cfg.limits.max_tokens),
        _completion_sse,
        text_completion_body,
    ), methods=["POST"])  # fmt: skip
    app.add_api_route("/v1/chat/completions", endpoint(
        ChatCompletionRequest,
        lambda body, headers, core: to_chat_request(
            body, request_meta(headers), core.cfg.limits.max_tokens, core.cfg.limits.max_messages
        ),
        _sse,
        completion_body,
    ), methods=["POST"])  # fmt: skip


def _data(body: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n".encode() if event_id else b""
    return head + b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


# Turns one stream event of choice i (already folded into its outcome) into SSE bodies.
Render = Callable[[int, StreamEvent, Outcome], list[dict[str, Any]]]


async def _relay(
    core: GatewayCore,
    tenant: str,
    rids: list[str],
    model: str,
    render: Render,
    first: list[dict[str, Any]],
    usage: Callable[[list[Outcome]], dict[str, Any]] | None,
    after: list[str] | None = None,
    keep: bool = False,
) -> AsyncIterator[bytes]:
    """Relay the streams of a request's choices as server-sent events, ending with ``[DONE]``.

    Every event carries an ``id`` (see :func:`resume_positions`); with ``after``
    the relay resumes from those entries and sends no opening chunks. A failed
    choice ends the stream with an OpenAI error event; a client that goes away
    before the end cancels every choice not finished (and so the rest of their
    reservations), unless ``keep`` (the request has an Idempotency-Key, so its
    client may come back for the rest). With ``usage``, a last chunk carries the usage of all choices
    (of those events relayed by this connection).
    """
    outs = [Outcome() for _ in rids]
    pos = list(after or ["0-0"] * len(rids))
    done: set[int] = set()
    failed = False
    try:
        if after is None:
            for body in first:
                yield _data(body)
        async for i, ev in core.relay.merged_events(model, rids, labels=(tenant, model), after=pos):
            pos[i] = ev.entry_id
            try:
                fold(outs[i], ev)
            except OssfleetError as e:
                failed = True
                yield _data(e.to_openai(), ",".join(pos))
                break
            if ev.type == "done":
                done.add(i)
            for body in render(i, ev, outs[i]):
                yield _data(body, ",".join(pos))
        if usage is not None and not failed:
            yield _data(usage(outs))
        yield b"data: [DONE]\n\n"
    finally:
        for i, rid in enumerate(rids):
            if i not in done and not keep:
                core.cancel_abandoned(tenant, rid)


def _sse(
    core: GatewayCore,
    tenant: str,
    rids: list[str],
    model: str,
    created: int,
    include_usage: bool,
    logprobs: bool = False,
    after: list[str] | None = None,
    keep: bool = False,
) -> AsyncIterator[bytes]:
    base = {"id": f"chatcmpl-{rids[0]}", "object": "chat.completion.chunk", "created": created, "model": model}

    def chunk(i: int, delta: dict[str, Any], finish: str | None = None, lps: Any = None) -> dict[str, Any]:
        choice = {"index": i, "delta": delta, "logprobs": lps, "finish_reason": finish}
        return {**base, "choices": [choice]}

    tool_calls = [0] * len(rids)

    def render(i: int, ev: StreamEvent, out: Outcome) -> list[dict[str, Any]]:
        f = ev.fields
        if ev.type == "done":
            return [chunk(i, {}, openai_finish(out.finish_reason))]
        kind = f.get("kind")
        if ev.type != "delta" or kind not in ("content", "reasoning", "tool_call"):
            return []
        if kind == "tool_call":
            call = {
                "index": tool_calls[i],
                "id": f["id"],
                "type": "function",
                "function": {"name": f["name"], "arguments": f["arguments"]},
            }
            tool_calls[i] += 1
            return [chunk(i, {"tool_calls": [call]})]
        lps = chat_logprobs(ev.logprobs()) if logprobs and kind == "content" else None
        return [chunk(i, {kind: f.get("text", "")}, lps=lps)]

    def usage(outs: list[Outcome]) -> dict[str, Any]:
        return {**base, "choices": [], "usage": usage_body(outs)}

    first = [chunk(i, {"role": "assistant", "content": ""}) for i in range(len(rids))]
    return _relay(core, tenant, rids, model, render, first, usage if include_usage else None, after, keep)


def _completion_sse(
    core: GatewayCore,
    tenant: str,
    rids: list[str],
    model: str,
    created: int,
    include_usage: bool,
    logprobs: bool = False,
    after: list[str] | None = None,
    keep: bool = False,
) -> AsyncIterator[bytes]:
    base = {"id": f"cmpl-{rids[0]}", "object": "text_completion", "created": created, "model": model}
    offsets = [0] * len(rids)

    def choice(i: int, text: str, finish: str | None = None, lps: Any = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": i, "text": text, "logprobs": lps, "finish_reason": finish}]}

    def render(i: int, ev: StreamEvent, out: Outcome) -> list[dict[str, Any]]:
        if ev.type == "done":
            return [choice(i, "", openai_finish(out.finish_reason))]
        if ev.type == "delta" and ev.fields.get("kind") == "content":
            lps = None
            if logprobs:
                entries = ev.logprobs()
                lps = completion_logprobs(entries, offsets[i])
                offsets[i] += sum(len(e["token"]) for e in entries)
            return [choice(i, ev.fields.get("text", ""), lps=lps)]
        return []

    def usage(outs: list[Outcome]) -> dict[str, Any]:
        return {**base, "choices": [], "usage": usage_body(outs)}

    return _relay(core, tenant, rids, model, render, [], usage if include_usage else None, after, keep)
