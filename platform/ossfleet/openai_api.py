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
import re
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
from ossfleet.structured import OutputFormat, forced_tools

log = logging.getLogger("ossfleet.http")

_ENTRY = re.compile(r"\d{1,20}-\d{1,20}")


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


class JsonSchemaFormat(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: Annotated[dict[str, Any], Field(alias="schema")] = {}
    strict: bool | None = None  # the schema is always enforced (constrained decoding), strict or not


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("a json_schema response_format needs its json_schema object")
        return self


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


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
    n: Annotated[int, Field(ge=1, le=128)] = 1
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
            "n": self.n,
        }

    def check_choices(self, prompts: int, limit: int) -> None:
        if self.n * prompts > limit:
            what = f"n ({self.n}) x prompts ({prompts})" if prompts > 1 else f"n ({self.n})"
            raise InvalidRequest(f"{what} asks for more completions than the limit of {limit}", param="n")


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    # Accepted and ignored: the model calls at most one tool per turn (harmony), which either value allows.
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    @model_validator(mode="after")
    def _one_max(self) -> ChatCompletionRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def output_format(self, tools: tuple[Tool, ...]) -> OutputFormat | None:
        """What the output must be: a forced tool call, a JSON value, or free (None)."""
        choice = self.tool_choice.function.name if isinstance(self.tool_choice, NamedToolChoice) else self.tool_choice
        forced = forced_tools(tools, choice)
        if forced:
            if self.response_format is not None and self.response_format.type != "text":
                raise InvalidRequest(
                    "a forced tool call and a JSON response_format cannot both shape one answer", param="tool_choice"
                )
            return OutputFormat("tool_call", tools=forced)
        rf = self.response_format
        if rf is None or rf.type == "text":
            return None
        if rf.type == "json_object":
            return OutputFormat("json_object")
        assert rf.json_schema is not None
        return OutputFormat("json_schema", schema=rf.json_schema.schema_)


class CompletionRequest(_Generation):
    """``/v1/completions``: a raw prompt, continued as plain text (no harmony rendering)."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=128)]
    max_tokens: Annotated[int, Field(ge=1)] = 16
    echo: Literal[False] = False
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    suffix: None = None

    def texts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


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
        output_format=body.output_format(tools),
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        **body.common(headers),
    )


def to_completion_request(body: CompletionRequest, headers: Any, max_tokens_limit: int) -> ChatRequest:
    texts = body.texts()
    for i, t in enumerate(texts):
        if not t:
            raise InvalidRequest("prompt must not be empty", param="prompt" if len(texts) == 1 else f"prompt.{i}")
    if body.max_tokens > max_tokens_limit:
        raise InvalidRequest(
            f"max_tokens {body.max_tokens} is above the limit of {max_tokens_limit}", param="max_tokens"
        )
    return ChatRequest(
        messages=(), max_tokens=body.max_tokens, prompt=texts[0], more_prompts=tuple(texts[1:]),
        logprobs=body.logprobs, **body.common(headers),
    )  # fmt: skip


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
    if req.n > 1 or req.more_prompts:
        raise InvalidRequest("a batch line asks for one completion: n = 1 and one prompt", param="n")
    check_request(req)  # what admission checks, so that a line that passes here can be admitted
    return replace(req, batch=True)


def response_body(endpoint: str, rid: str, model: str, created: int, o: Outcome) -> dict[str, Any]:
    """The response a request to ``endpoint`` gets, whole (not streamed)."""
    build = completion_body if endpoint == "/v1/chat/completions" else text_completion_body
    return build(rid, model, created, [o])


def _usage(outs: list[Outcome]) -> dict[str, int]:
    """What was billed: every choice's prompt and output tokens (each choice is its own request)."""
    prompt = sum(o.input_tokens for o in outs)
    completion = sum(o.output_tokens for o in outs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(reason: str) -> str:
    return {"cancelled": "stop", "abort": "stop"}.get(reason, reason)


def chat_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"content": entries, "refusal": None}


def completion_logprobs(entries: list[dict[str, Any]], offset: int = 0) -> dict[str, Any]:
    """The legacy completions form of the answer tokens' log-probabilities, text offsets from ``offset``."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


def _message(o: Outcome) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": o.content or None}
    if o.reasoning:
        message["reasoning"] = o.reasoning
    if o.tool_calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in o.tool_calls
        ]
    return message


def completion_body(rid: str, model: str, created: int, outs: list[Outcome], logprobs: bool = False) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "message": _message(o),
            "logprobs": chat_logprobs(o.logprobs) if logprobs else None,
            "finish_reason": _finish(o.finish_reason),
        }
        for i, o in enumerate(outs)
    ]
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _usage(outs),
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


def text_completion_body(
    rid: str, model: str, created: int, outs: list[Outcome], logprobs: bool = False
) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "text": o.content,
            "logprobs": completion_logprobs(o.logprobs) if logprobs else None,
            "finish_reason": _finish(o.finish_reason),
        }
        for i, o in enumerate(outs)
    ]
    return {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _usage(outs),
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
        whole: Callable[..., dict[str, Any]],
    ) -> Response:
        """Authenticate, parse, validate, submit; then stream (SSE) or answer whole."""
        core = get_core()
        tenant = await core.tenant(request.headers.get("authorization"))
        data = await _body(request, core.cfg.limits.max_request_bytes)
        try:
            body: Any = schema.model_validate(data)
        except ValidationError as e:
            raise _pydantic_error(e) from None
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
            stream = sse(core, tenant.name, rids, sub.placement.model, created, include_usage, logprobs, after, keep)
            return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
        outs = await core.outcomes_or_cancel(tenant.name, rids, sub.placement.model, cancel=not req.idempotency_key)
        return JSONResponse(whole(sub.request_id, sub.placement.model, created, outs, logprobs), headers=headers)

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
    from ossfleet.responses_api import add_responses_routes

    add_batch_routes(app, get_core)
    add_responses_routes(app, get_core)
    return app


def _data(body: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n".encode() if event_id else b""
    return head + b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def resume_positions(last_event_id: str | None, choices: int) -> list[str] | None:
    """The stream entry each choice was read up to, from an SSE ``Last-Event-ID`` (None: start over).

    An event's id lists, per choice, the last stream entry delivered (``1717-0,1718-3``), so a client
    that reconnects with it (re-sending its request with the same Idempotency-Key) misses and repeats nothing.
    """
    if not last_event_id:
        return None
    parts = last_event_id.split(",")
    if len(parts) != choices or not all(_ENTRY.fullmatch(p) for p in parts):
        raise InvalidRequest("Last-Event-ID is not an event id of this request's stream", param="Last-Event-ID")
    return parts


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
        async for i, ev in core.merged_events(rids, labels=(tenant, model), after=pos):
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


def _event_logprobs(ev: StreamEvent) -> list[dict[str, Any]]:
    raw = ev.fields.get("logprobs")
    return json.loads(raw) if raw else []


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
            return [chunk(i, {}, _finish(out.finish_reason))]
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
        lps = chat_logprobs(_event_logprobs(ev)) if logprobs and kind == "content" else None
        return [chunk(i, {kind: f.get("text", "")}, lps=lps)]

    def usage(outs: list[Outcome]) -> dict[str, Any]:
        return {**base, "choices": [], "usage": _usage(outs)}

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
            return [choice(i, "", _finish(out.finish_reason))]
        if ev.type == "delta" and ev.fields.get("kind") == "content":
            lps = None
            if logprobs:
                entries = _event_logprobs(ev)
                lps = completion_logprobs(entries, offsets[i])
                offsets[i] += sum(len(e["token"]) for e in entries)
            return [choice(i, ev.fields.get("text", ""), lps=lps)]
        return []

    def usage(outs: list[Outcome]) -> dict[str, Any]:
        return {**base, "choices": [], "usage": _usage(outs)}

    return _relay(core, tenant, rids, model, render, [], usage if include_usage else None, after, keep)
