"""OpenAI's chat and completions protocol: request schemas, their conversion to a ChatRequest, response bodies.

No transport here: the HTTP adapter (``ossfleet.api.openai``) parses with these schemas and answers with
these bodies, and batch jobs check their lines and write their outputs with the same. The body is parsed
strictly (unknown fields refused, as OpenAI does), so every bad request gets an OpenAI-style error naming
the field to fix.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ossfleet import jsonlimits
from ossfleet.errors import InvalidRequest
from ossfleet.harmony import Message, Tool, ToolCall
from ossfleet.protocol.chat import ChatRequest, Prompt, RequestMeta, check_request, validate_messages
from ossfleet.protocol.events import FinishReason, Outcome, stream_position
from ossfleet.protocol.limits import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    MAX_CHOICES,
    MAX_STOP_SEQUENCES,
    resolve_max_tokens,
)
from ossfleet.structured import OutputFormat, forced_tools


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


TokenId = Annotated[int, Field(ge=0, lt=2**31)]


class _Generation(_Strict):
    """The fields both completion endpoints share: model, sampling, streaming."""

    model: Annotated[str, Field(min_length=1, max_length=128)]
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    # vLLM's extra sampling parameters (the openai client sends them in extra_body): the stop tokens
    # cannot end the answer before min_tokens; with ignore_eos they never do (benchmarks of long outputs).
    min_tokens: Annotated[int, Field(ge=0)] = 0
    ignore_eos: bool = False
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = 1
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

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _Generation:
        # OpenAI and vLLM answer 400 here: options for a stream that is not one are a client's mistake.
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def common(self, meta: RequestMeta) -> dict[str, Any]:
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
            "priority": meta.priority,
            "idempotency_key": meta.idempotency_key[:128],
            "end_user": self.user or meta.end_user[:256],
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

    # Text, texts, token ids, or lists of token ids (as OpenAI's and vLLM's completions take them).
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=128)]
        | Annotated[list[TokenId], Field(min_length=1)]
        | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1, max_length=128)]
    )
    max_tokens: Annotated[int, Field(ge=1)] = COMPLETIONS_DEFAULT_MAX_TOKENS
    echo: Literal[False] = False
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    suffix: None = None

    def texts(self) -> list[Prompt]:
        """The prompts, each a text or a tuple of token ids."""
        p: Any = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [tuple(p)]
        return [x if isinstance(x, str) else tuple(x) for x in p]


def pydantic_error(e: ValidationError) -> InvalidRequest:
    """A pydantic validation error as an OpenAI-style 400 naming the field."""
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or None
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = f"unrecognized request argument: {loc}"
    return InvalidRequest(f"{loc}: {msg}" if loc else msg, param=loc)


def parse_json(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object: UTF-8, JSON with a nesting limit (``jsonlimits``), an object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequest(f"request body is not valid UTF-8 (byte {e.start})") from None
    data = jsonlimits.loads(text)
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data


def to_chat_request(
    body: ChatCompletionRequest, meta: RequestMeta, max_tokens_limit: int, max_messages: int
) -> ChatRequest:
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
    max_tokens = resolve_max_tokens(body.max_completion_tokens or body.max_tokens, max_tokens_limit)
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
        **body.common(meta),
    )


def to_completion_request(body: CompletionRequest, meta: RequestMeta, max_tokens_limit: int) -> ChatRequest:
    texts = body.texts()
    for i, t in enumerate(texts):
        if not t:
            raise InvalidRequest("prompt must not be empty", param="prompt" if len(texts) == 1 else f"prompt[{i}]")
    return ChatRequest(
        messages=(), max_tokens=resolve_max_tokens(body.max_tokens, max_tokens_limit), prompt=texts[0],
        more_prompts=tuple(texts[1:]),
        logprobs=body.logprobs, **body.common(meta),
    )  # fmt: skip


def batch_request(endpoint: str, body: dict[str, Any], limits: Any) -> ChatRequest:
    """A batch line's body as the request it stands for, checked as an HTTP request would be."""
    schema: type[_Generation] = ChatCompletionRequest if endpoint == "/v1/chat/completions" else CompletionRequest
    try:
        parsed: Any = schema.model_validate(body)
    except ValidationError as e:
        raise pydantic_error(e) from None
    if endpoint == "/v1/chat/completions":
        req = to_chat_request(parsed, RequestMeta(), limits.max_tokens, limits.max_messages)
    else:
        req = to_completion_request(parsed, RequestMeta(), limits.max_tokens)
    if req.n > 1 or req.more_prompts:
        raise InvalidRequest("a batch line asks for one completion: n = 1 and one prompt", param="n")
    check_request(req)  # what admission checks, so that a line that passes here can be admitted
    return replace(req, batch=True)


def response_body(
    endpoint: str, rid: str, model: str, created: int, o: Outcome, logprobs: bool = False
) -> dict[str, Any]:
    """The response a request to ``endpoint`` gets, whole (not streamed); with ``logprobs``, the answer's."""
    build = completion_body if endpoint == "/v1/chat/completions" else text_completion_body
    return build(rid, model, created, [o], logprobs)


def usage_body(outs: list[Outcome]) -> dict[str, int]:
    """What was billed: every choice's prompt and output tokens (each choice is its own request)."""
    prompt = sum(o.input_tokens for o in outs)
    completion = sum(o.output_tokens for o in outs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"content": entries, "refusal": None}


def completion_logprobs(entries: list[dict[str, Any]], offset: int = 0) -> dict[str, Any]:
    """The legacy completions form of the answer tokens' log-probabilities, text offsets from ``offset``."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e["token"])
    return {
        "tokens": [legacy_token(e) for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        # The sampled token always, then the k most likely (OpenAI's form: up to logprobs + 1 keys).
        "top_logprobs": [
            {legacy_token(e): e["logprob"], **{legacy_token(t): t["logprob"] for t in e["top_logprobs"]}}
            for e in entries
        ],
        "text_offset": offsets,
    }


def legacy_token(entry: dict[str, Any]) -> str:
    """A token as the legacy completions form names it: its text, or ``bytes:\\xNN...`` where its bytes are
    not UTF-8 on their own (part of a character), so distinct tokens never collapse into one "\ufffd" key."""
    raw = bytes(entry["bytes"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


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


def openai_finish(reason: FinishReason) -> str:
    """A finish reason in OpenAI's words: they know no "cancelled" (it reads as "stop")."""
    return FinishReason.STOP.value if reason is FinishReason.CANCELLED else reason.value


def completion_body(rid: str, model: str, created: int, outs: list[Outcome], logprobs: bool = False) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "message": _message(o),
            "logprobs": chat_logprobs(o.logprobs) if logprobs else None,
            "finish_reason": openai_finish(o.finish_reason),
        }
        for i, o in enumerate(outs)
    ]
    return {
        "id": f"chatcmpl-{rid}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_body(outs),
    }


def text_completion_body(
    rid: str, model: str, created: int, outs: list[Outcome], logprobs: bool = False
) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "text": o.content,
            "logprobs": completion_logprobs(o.logprobs) if logprobs else None,
            "finish_reason": openai_finish(o.finish_reason),
        }
        for i, o in enumerate(outs)
    ]
    return {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_body(outs),
    }


def resume_positions(last_event_id: str | None, choices: int) -> list[str] | None:
    """The stream entry each choice was read up to, from an SSE ``Last-Event-ID`` (None: start over).

    An event's id lists, per choice, the last stream entry delivered (``1717-0,1718-3``), so a client
    that reconnects with it (re-sending its request with the same Idempotency-Key) misses and repeats nothing.
    """
    if not last_event_id:
        return None
    parts = last_event_id.split(",")
    if len(parts) != choices:
        raise InvalidRequest("Last-Event-ID is not an event id of this request's stream", param="Last-Event-ID")
    return [stream_position(p, "Last-Event-ID") for p in parts]
