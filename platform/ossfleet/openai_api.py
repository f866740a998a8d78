"""The OpenAI-compatible HTTP API (``/v1/chat/completions``, ``/v1/models``).

A FastAPI app over :class:`ossfleet.gateway.GatewayCore`. The body is parsed
here (size limit, JSON, UTF-8, then a strict pydantic model) so that every bad
request gets an OpenAI-style error body with the right status and the field
to fix, and nothing reaches Redis. Reasoning is returned in ``reasoning``, as
current OpenAI-compatible servers do; the model that served is in ``model``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ossfleet import jsonlimits
from ossfleet.errors import InvalidRequest, ModelNotFound, OssfleetError, RequestTooLarge, from_unexpected
from ossfleet.gateway import ChatRequest, GatewayCore, Outcome, check_request, fold, validate_messages
from ossfleet.harmony import Message, Tool, ToolCall
from ossfleet.queue import StreamEvent

log = logging.getLogger("ossfleet.http")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCallIn(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class FunctionDef(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str = ""
    parameters: dict[str, Any] = {}
    strict: bool | None = None


class ToolDef(_Strict):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(_Strict):
    include_usage: bool = False


class _Generation(_Strict):
    """The fields both completion endpoints share: model, sampling, streaming."""

    model: Annotated[str, Field(min_length=1, max_length=128)]
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    # vLLM's extra sampling parameters (the openai client sends them in extra_body): the stop tokens
    # cannot end the answer before min_tokens; with ignore_eos they never do (benchmarks of long outputs).
    min_tokens: Annotated[int, Field(ge=0)] = 0
    ignore_eos: bool = False
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    # OpenAI's own fields that change nothing here: accepted and ignored (README: "OpenAI parameters").
    user: Annotated[str, Field(max_length=256)] | None = None
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)] | None = None
    store: bool | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    prompt_cache_key: Annotated[str, Field(max_length=256)] | None = None
    safety_identifier: Annotated[str, Field(max_length=256)] | None = None
    # Accepted for client compatibility; only the neutral value is supported.
    presence_penalty: Annotated[float, Field(ge=0, le=0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=0, le=0)] | None = None

    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def common(self, headers: Any) -> dict[str, Any]:
        """The ChatRequest fields both endpoints fill alike: sampling, priority, idempotency."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": self.stop_strings(),
            "min_tokens": self.min_tokens,
            "ignore_eos": self.ignore_eos,
            "priority": headers.get("x-ossfleet-priority"),
            "idempotency_key": headers.get("idempotency-key", "")[:128],
        }


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["auto", "none"] | None = None
    # Accepted and ignored: the model calls at most one tool per turn (harmony), which either value allows.
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    logprobs: Literal[False] | None = None

    @model_validator(mode="after")
    def _one_max(self) -> ChatCompletionRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        return self


class CompletionRequest(_Generation):
    """``/v1/completions``: a raw prompt, continued as plain text (no harmony rendering)."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] = 16
    echo: Literal[False] = False
    logprobs: None = None
    suffix: None = None

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def _pydantic_error(e: ValidationError) -> InvalidRequest:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or None
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = f"unrecognized request argument: {loc}"
    return InvalidRequest(f"{loc}: {msg}" if loc else msg, param=loc)


def error_response(e: OssfleetError) -> JSONResponse:
    return JSONResponse(e.to_openai(), status_code=e.http_status, headers=e.headers())


async def _body(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise RequestTooLarge(f"request body exceeds the limit of {limit} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequest(f"request body is not valid UTF-8 (byte {e.start})") from None
    data = jsonlimits.loads(text)
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data


def to_chat_request(body: ChatCompletionRequest, headers: Any, max_tokens_limit: int, max_messages: int) -> ChatRequest:
    messages = [
        Message(
            role=m.role,
            content=m.text(),
            reasoning=m.reasoning,
            tool_calls=tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()),
            name=m.name,
            tool_call_id=m.tool_call_id,
        )
        for m in body.messages
    ]
    validate_messages(messages, max_messages)
    max_tokens = body.max_completion_tokens or body.max_tokens or min(1024, max_tokens_limit)
    if max_tokens > max_tokens_limit:
        raise InvalidRequest(f"max_tokens {max_tokens} is above the limit of {max_tokens_limit}", param="max_tokens")
    tools = (
        ()
        if body.tool_choice == "none"
        else tuple(Tool(t.function.name, t.function.description, t.function.parameters) for t in body.tools or ())
    )
    return ChatRequest(
        messages=messages,
        max_tokens=max_tokens,
        tools=tools,
        reasoning_effort=body.reasoning_effort,
        **body.common(headers),
    )


def to_completion_request(body: CompletionRequest, headers: Any, max_tokens_limit: int) -> ChatRequest:
    if not body.text():
        raise InvalidRequest("prompt must not be empty", param="prompt")
    if body.max_tokens > max_tokens_limit:
        raise InvalidRequest(
            f"max_tokens {body.max_tokens} is above the limit of {max_tokens_limit}", param="max_tokens"
        )
    return ChatRequest(messages=(), max_tokens=body.max_tokens, prompt=body.text(), **body.common(headers))


def batch_request(endpoint: str, body: dict[str, Any], limits: Any) -> ChatRequest:
    """A batch line's body as the request it stands for, checked as an HTTP request would be."""
    schema: type[_Generation] = ChatCompletionRequest if endpoint == "/v1/chat/completions" else CompletionRequest
    try:
        parsed: Any = schema.model_validate(body)
    except ValidationError as e:
        raise _pydantic_error(e) from None
    if endpoint == "/v1/chat/completions":
        req = to_chat_request(parsed, {}, limits.max_tokens, limits.max_messages)
    else:
        req = to_completion_request(parsed, {}, limits.max_tokens)
    check_request(req)  # what admission checks, so that a line that passes here can be admitted
    return replace(req, batch=True)


def response_body(endpoint: str, rid: str, model: str, created: int, o: Outcome) -> dict[str, Any]:
    """The response a request to ``endpoint`` gets, whole (not streamed)."""
    build = completion_body if endpoint == "/v1/chat/completions" else text_completion_body
    return build(rid, model, created, o)


def _usage(o: Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": o.input_tokens,
        "completion_tokens": o.output_tokens,
        "total_tokens": o.input_tokens + o.output_tokens,
    }


def _finish(reason: str) -> str:
    return {"cancelled": "stop", "abort": "stop"}.get(reason, reason)


def completion_body(rid: str, model: str, created: int, o: Outcome) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": o.content or None}
    if o.reasoning:
        message["reasoning"] = o.reasoning
    if o.tool_calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in o.tool_calls
        ]
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(o.finish_reason)}],
        "usage": _usage(o),
    }


_core: GatewayCore | None = None


def set_current_core(core: GatewayCore) -> None:
    """Install this process's GatewayCore.

    Ray Serve ships the ingress app and the deployment class by value, with
    copies of their module globals; functions of this module travel by
    reference, so this setter and :func:`current_core` share one global.
    """
    global _core
    _core = core


def current_core() -> GatewayCore:
    if _core is None:
        raise RuntimeError("the gateway is not initialised")
    return _core


def text_completion_body(rid: str, model: str, created: int, o: Outcome) -> dict[str, Any]:
    return {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": o.content, "logprobs": None, "finish_reason": _finish(o.finish_reason)}],
        "usage": _usage(o),
    }


def create_app(get_core: Callable[[], GatewayCore]) -> FastAPI:
    """The app, over the GatewayCore that ``get_core`` returns (the deployment's own)."""
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

    def model_object(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "ossfleet"}

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        core = get_core()
        await core.tenant(request.headers.get("authorization"))
        names = [m.name for m in core.cfg.models] + ["auto"]
        return JSONResponse({"object": "list", "data": [model_object(n) for n in names]})

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> JSONResponse:
        core = get_core()
        await core.tenant(request.headers.get("authorization"))
        names = [m.name for m in core.cfg.models] + ["auto"]
        if model_id not in names:
            raise ModelNotFound(f"model {model_id!r} does not exist; available: {names}", param="model")
        return JSONResponse(model_object(model_id))

    async def serve(
        request: Request,
        schema: type[_Strict],
        to_request: Callable[[Any, Any, GatewayCore], ChatRequest],
        sse: Callable[..., AsyncIterator[bytes]],
        whole: Callable[[str, str, int, Outcome], dict[str, Any]],
    ) -> Response:
        """Authenticate, parse, validate, submit; then stream (SSE) or answer whole."""
        core = get_core()
        tenant = await core.tenant(request.headers.get("authorization"))
        data = await _body(request, core.cfg.limits.max_request_bytes)
        try:
            body: Any = schema.model_validate(data)
        except ValidationError as e:
            raise _pydantic_error(e) from None
        sub = await core.submit(tenant, to_request(body, request.headers, core))
        created = int(time.time())
        headers = {"x-ossfleet-request-id": sub.request_id}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            stream = sse(core, tenant.name, sub.request_id, sub.placement.model, created, include_usage)
            return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
        out = await core.outcome_or_cancel(tenant.name, sub.request_id, sub.placement.model)
        return JSONResponse(whole(sub.request_id, sub.placement.model, created, out), headers=headers)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await serve(
            request,
            CompletionRequest,
            lambda body, headers, core: to_completion_request(body, headers, core.cfg.limits.max_tokens),
            _completion_sse,
            text_completion_body,
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await serve(
            request,
            ChatCompletionRequest,
            lambda body, headers, core: to_chat_request(
                body, headers, core.cfg.limits.max_tokens, core.cfg.limits.max_messages
            ),
            _sse,
            completion_body,
        )

    from ossfleet.batch.http import add_batch_routes

    add_batch_routes(app, get_core)
    return app


def _data(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


# Turns one stream event (already folded into the outcome) into SSE bodies.
Render = Callable[[StreamEvent, Outcome], list[dict[str, Any]]]


async def _relay(
    core: GatewayCore, tenant: str, rid: str, model: str, render: Render, first: list[dict[str, Any]]
) -> AsyncIterator[bytes]:
    """Relay a request's stream as server-sent events, ending with ``[DONE]``.

    A failed request ends with an OpenAI error event; a client that goes away
    before the end cancels the request (and so the rest of its reservation).
    """
    out = Outcome()
    finished = False
    try:
        for body in first:
            yield _data(body)
        async for ev in core.events(rid, labels=(tenant, model)):
            try:
                fold(out, ev)
            except OssfleetError as e:
                finished = True
                yield _data(e.to_openai())
                break
            finished = ev.type == "done"
            for body in render(ev, out):
                yield _data(body)
        yield b"data: [DONE]\n\n"
    finally:
        if not finished:
            core.cancel_abandoned(tenant, rid)


def _sse(
    core: GatewayCore, tenant: str, rid: str, model: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    base = {"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": created, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    tool_calls = 0

    def render(ev: StreamEvent, out: Outcome) -> list[dict[str, Any]]:
        nonlocal tool_calls
        f = ev.fields
        if ev.type == "done":
            return [chunk({}, _finish(out.finish_reason))] + (
                [{**base, "choices": [], "usage": _usage(out)}] if include_usage else []
            )
        kind = f.get("kind")
        if ev.type != "delta" or kind not in ("content", "reasoning", "tool_call"):
            return []
        if kind == "tool_call":
            call = {
                "index": tool_calls,
                "id": f["id"],
                "type": "function",
                "function": {"name": f["name"], "arguments": f["arguments"]},
            }
            tool_calls += 1
            return [chunk({"tool_calls": [call]})]
        return [chunk({kind: f.get("text", "")})]

    return _relay(core, tenant, rid, model, render, [chunk({"role": "assistant", "content": ""})])


def _completion_sse(
    core: GatewayCore, tenant: str, rid: str, model: str, created: int, include_usage: bool
) -> AsyncIterator[bytes]:
    base = {"id": f"cmpl-{rid}", "object": "text_completion", "created": created, "model": model}

    def choice(text: str, finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

    def render(ev: StreamEvent, out: Outcome) -> list[dict[str, Any]]:
        if ev.type == "done":
            usage = [{**base, "choices": [], "usage": _usage(out)}] if include_usage else []
            return [choice("", _finish(out.finish_reason)), *usage]
        if ev.type == "delta" and ev.fields.get("kind") == "content":
            return [choice(ev.fields.get("text", ""))]
        return []

    return _relay(core, tenant, rid, model, render, [])
