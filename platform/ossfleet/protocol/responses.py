"""OpenAI's Responses API protocol: the request, its input items as chat messages, output items, stream events.

No transport and no storage here (``ossfleet.api.responses`` serves it over HTTP and keeps stored
responses in Redis). A response maps onto one chat request: ``instructions`` become a developer
message, input items messages (a ``function_call`` joins the assistant turn it belongs to, a
``function_call_output`` is a tool message, a ``reasoning`` item the next assistant message's
reasoning), function tools and ``tool_choice`` the chat's, ``text.format`` the output format. The
answer becomes output items: ``reasoning`` (the analysis channel), ``message`` with ``output_text``,
``function_call``; streamed, as the Responses event types (:class:`EventWriter`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ossfleet.errors import InvalidRequest, OssfleetError
from ossfleet.harmony import Message, Tool, ToolCall
from ossfleet.protocol.chat import ChatRequest, RequestMeta, validate_messages
from ossfleet.protocol.events import FinishReason, Outcome
from ossfleet.protocol.limits import resolve_max_tokens
from ossfleet.structured import OutputFormat, forced_tools


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Item(BaseModel):
    """An input item: fields OpenAI adds to items it returned (ids, status, callers) are ignored, since
    clients send output items back as they got them."""

    model_config = ConfigDict(extra="ignore")


class TextPart(_Item):
    type: Literal["input_text", "output_text", "text"]
    text: str


class MessageItem(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    name: str
    arguments: str


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    output: str | list[TextPart]

    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(p.text for p in self.output)


class ReasoningText(_Item):
    type: Literal["reasoning_text", "summary_text"]
    text: str


class ReasoningItem(_Item):
    type: Literal["reasoning"]
    summary: list[ReasoningText] = []
    content: list[ReasoningText] | None = None


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem


class FunctionTool(_Strict):
    type: Literal["function"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedTool(_Strict):
    type: Literal["function"]
    name: str


class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    description: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # accepted and ignored


class ReasoningConfig(_Strict):
    effort: Literal["low", "medium", "high"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None  # accepted; the reasoning is returned whole


class StreamOptions(_Strict):
    include_obfuscation: bool | None = None


class ResponseCreate(_Strict):
    model: Annotated[str, Field(min_length=1, max_length=128)]
    input: str | Annotated[list[dict[str, Any]], Field(max_length=4096)]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedTool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    store: bool = True
    previous_response_id: Annotated[str, Field(max_length=128)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    include: list[str] | None = None
    background: Literal[False] | None = None
    truncation: Literal["disabled"] | None = None
    # OpenAI's own fields that change nothing here: accepted and ignored (README: "OpenAI parameters").
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)] | None = None
    parallel_tool_calls: bool | None = None
    user: Annotated[str, Field(max_length=256)] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    prompt_cache_key: Annotated[str, Field(max_length=256)] | None = None
    safety_identifier: Annotated[str, Field(max_length=256)] | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None

    def items(self) -> list[InputItem]:
        """The input as typed items; an item of a type ossfleet cannot take is a 400 naming it."""
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        out: list[InputItem] = []
        kinds: dict[str, type[InputItem]] = {
            "message": MessageItem, "function_call": FunctionCallItem,
            "function_call_output": FunctionCallOutputItem, "reasoning": ReasoningItem,
        }  # fmt: skip
        for i, raw in enumerate(self.input):
            kind = raw.get("type", "message")
            model = kinds.get(kind) if isinstance(kind, str) else None
            if model is None:
                raise InvalidRequest(
                    f"input[{i}] is an item of type {kind!r}; ossfleet takes {sorted(kinds)}", param=f"input[{i}].type"
                )
            try:
                out.append(model.model_validate(raw))
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise InvalidRequest(f"input[{i}].{where}: {first['msg']}", param=f"input[{i}].{where}") from None
        return out

    def logprobs(self) -> int | None:
        if self.top_logprobs is None and "message.output_text.logprobs" not in (self.include or []):
            return None
        return self.top_logprobs or 0


def to_messages(items: list[InputItem]) -> list[Message]:
    """Input items as chat messages: a function call joins the assistant turn it belongs to."""
    out: list[Message] = []
    reasoning: str | None = None
    for it in items:
        if isinstance(it, MessageItem):
            out.append(Message(it.role, it.text(), reasoning if it.role == "assistant" else None))
            reasoning = None
        elif isinstance(it, ReasoningItem):
            reasoning = "".join(p.text for p in (it.content or it.summary))
        elif isinstance(it, FunctionCallItem):
            call = ToolCall(it.call_id, it.name, it.arguments)
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and not last.content:
                out[-1] = Message("assistant", "", last.reasoning, (*last.tool_calls, call))
            else:
                out.append(Message("assistant", "", reasoning, (call,)))
            reasoning = None
        else:
            out.append(Message("tool", it.text(), tool_call_id=it.call_id))
    return out


def message_dict(m: Message) -> dict[str, Any]:
    return asdict(m)


def message_from(d: dict[str, Any]) -> Message:
    return Message(**{**d, "tool_calls": tuple(ToolCall(**c) for c in d.get("tool_calls") or ())})


# -- output items ---------------------------------------------------------------------------------


def _usage(o: Outcome) -> dict[str, Any]:
    # Reasoning tokens are not counted apart from the rest of the output (reported as 0).
    return {
        "input_tokens": o.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": o.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": o.input_tokens + o.output_tokens,
    }


def _reasoning_item(rid: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}]
    return {"id": f"rs_{rid}", "type": "reasoning", "summary": [], "content": content, "status": status}


def _text_part(text: str, logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def _message_item(rid: str, text: str, logprobs: list[dict[str, Any]] | None, status: str = "completed") -> dict:
    content = [_text_part(text, logprobs)] if status == "completed" else []
    return {"id": f"msg_{rid}", "type": "message", "role": "assistant", "status": status, "content": content}


def _call_item(call: dict[str, str], status: str = "completed") -> dict[str, Any]:
    return {
        "id": "fc_" + call["id"].removeprefix("call_"), "type": "function_call", "call_id": call["id"],
        "name": call["name"], "arguments": call["arguments"] if status == "completed" else "", "status": status,
    }  # fmt: skip


def output_items(rid: str, o: Outcome) -> list[dict[str, Any]]:
    items = []
    if o.reasoning:
        items.append(_reasoning_item(rid, o.reasoning))
    if o.content or not (o.reasoning or o.tool_calls):
        items.append(_message_item(rid, o.content, o.logprobs))
    items += [_call_item(c) for c in o.tool_calls]
    return items


class ResponseState:
    """A response object as it grows: its request's fields, then its output and status."""

    def __init__(self, rid: str, model: str, body: ResponseCreate, created: int) -> None:
        self.rid = rid
        self.body: dict[str, Any] = {
            "id": f"resp_{rid}", "object": "response", "created_at": created, "status": "in_progress",
            "model": model, "output": [], "error": None, "incomplete_details": None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "previous_response_id": body.previous_response_id,
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
            "tool_choice": (body.tool_choice.model_dump() if isinstance(body.tool_choice, NamedTool)
                            else body.tool_choice or "auto"),
            "temperature": body.temperature, "top_p": body.top_p,
            "text": (body.text.model_dump(by_alias=True, exclude_none=True) if body.text
                     else {"format": {"type": "text"}}),
            "reasoning": body.reasoning.model_dump() if body.reasoning else {"effort": None, "summary": None},
            "parallel_tool_calls": body.parallel_tool_calls if body.parallel_tool_calls is not None else True,
            "metadata": body.metadata or {}, "store": body.store, "background": False, "usage": None,
            "user": body.user, "service_tier": "default", "truncation": "disabled",
        }  # fmt: skip

    def finish(self, o: Outcome | None, error: OssfleetError | None = None) -> dict[str, Any]:
        b = self.body
        b["completed_at"] = int(time.time())
        if error is not None:
            b["status"] = "failed"
            b["error"] = {"code": "server_error", "message": error.message}
            return b
        assert o is not None
        b["output"] = output_items(self.rid, o)
        b["usage"] = _usage(o)
        if o.finish_reason is FinishReason.LENGTH:
            b["status"], b["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
        elif o.finish_reason is FinishReason.CANCELLED:
            b["status"] = "cancelled"
        else:
            b["status"] = "completed"
        return b


def to_chat_request(body: ResponseCreate, prior: list[Message], meta: RequestMeta, limits: Any) -> ChatRequest:
    """The chat request a response stands for: ``instructions`` first, then the conversation of the
    previous response (``prior``), then the input."""
    messages: list[Message] = list(prior)
    if body.instructions:
        messages.insert(0, Message("developer", body.instructions))
    messages += to_messages(body.items())
    validate_messages(messages, limits.max_messages)
    max_tokens = resolve_max_tokens(body.max_output_tokens, limits.max_tokens, "max_output_tokens")
    tools = (
        ()
        if body.tool_choice == "none"
        else tuple(Tool(f.name, f.description or "", f.parameters or {}) for f in body.tools or ())
    )
    choice = body.tool_choice.name if isinstance(body.tool_choice, NamedTool) else body.tool_choice
    fmt: OutputFormat | None = None
    forced = forced_tools(tools, choice)
    text_format = body.text.format if body.text and body.text.format else None
    if forced:
        fmt = OutputFormat("tool_call", tools=forced)
    elif text_format is not None and text_format.type == "json_object":
        fmt = OutputFormat("json_object")
    elif text_format is not None and text_format.type == "json_schema":
        if text_format.schema_ is None:
            raise InvalidRequest("text.format of type json_schema needs its schema", param="text.format.schema")
        fmt = OutputFormat("json_schema", schema=text_format.schema_)
    return ChatRequest(
        model=body.model,
        messages=messages,
        max_tokens=max_tokens,
        tools=tools,
        reasoning_effort=body.reasoning.effort if body.reasoning else None,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        priority=meta.priority,
        idempotency_key=meta.idempotency_key[:128],
        end_user=body.user or meta.end_user[:256],
        output_format=fmt,
        logprobs=body.logprobs(),
    )


# -- streaming ------------------------------------------------------------------------------------


class EventWriter:
    """The Responses stream's events for one response, from its request's stream events."""

    def __init__(self, state: ResponseState) -> None:
        self.state = state
        self.seq = 0
        self.items: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item text is streaming into
        self.text = ""
        self.logprobs: list[dict[str, Any]] = []

    def _ev(self, kind: str, **fields: Any) -> dict[str, Any]:
        ev = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return ev

    def start(self) -> list[dict[str, Any]]:
        r = dict(self.state.body)
        return [self._ev("response.created", response=r), self._ev("response.in_progress", response=r)]

    def _close(self) -> list[dict[str, Any]]:
        item = self.open
        if item is None:
            return []
        idx = len(self.items)
        self.open = None
        if item["type"] == "reasoning":
            done = _reasoning_item(self.state.rid, self.text)
            part = done["content"][0]
            evs = [
                self._ev("response.reasoning_text.done", item_id=item["id"], output_index=idx, content_index=0,
                         text=self.text),
                self._ev("response.content_part.done", item_id=item["id"], output_index=idx, content_index=0,
                         part=part),
            ]  # fmt: skip
        else:
            done = _message_item(self.state.rid, self.text, self.logprobs)
            part = done["content"][0]
            evs = [
                self._ev("response.output_text.done", item_id=item["id"], output_index=idx, content_index=0,
                         text=self.text, logprobs=self.logprobs),
                self._ev("response.content_part.done", item_id=item["id"], output_index=idx, content_index=0,
                         part=part),
            ]  # fmt: skip
        self.items.append(done)
        return [*evs, self._ev("response.output_item.done", output_index=idx, item=done)]

    def _open(self, kind: str) -> list[dict[str, Any]]:
        evs = self._close()
        rid, idx = self.state.rid, len(self.items)
        if kind == "reasoning":
            item = _reasoning_item(rid, "", "in_progress")
            item["content"] = []
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = _message_item(rid, "", None, "in_progress")
            part = _text_part("", None)
        self.open, self.text, self.logprobs = item, "", []
        return [
            *evs,
            self._ev("response.output_item.added", output_index=idx, item=item),
            self._ev("response.content_part.added", item_id=item["id"], output_index=idx, content_index=0, part=part),
        ]

    def delta(self, kind: str, text: str, logprobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        want = "reasoning" if kind == "reasoning" else "message"
        evs = [] if self.open is not None and self.open["type"] == want else self._open(kind)
        assert self.open is not None
        self.text += text
        self.logprobs += logprobs
        idx = len(self.items)
        if kind == "reasoning":
            return [*evs, self._ev("response.reasoning_text.delta", item_id=self.open["id"], output_index=idx,
                                   content_index=0, delta=text)]  # fmt: skip
        return [*evs, self._ev("response.output_text.delta", item_id=self.open["id"], output_index=idx,
                               content_index=0, delta=text, logprobs=logprobs)]  # fmt: skip

    def tool_call(self, call: dict[str, str]) -> list[dict[str, Any]]:
        evs = self._close()
        idx = len(self.items)
        added, done = _call_item(call, "in_progress"), _call_item(call)
        self.items.append(done)
        return [
            *evs,
            self._ev("response.output_item.added", output_index=idx, item=added),
            self._ev("response.function_call_arguments.delta", item_id=added["id"], output_index=idx,
                     delta=call["arguments"]),
            self._ev("response.function_call_arguments.done", item_id=added["id"], output_index=idx,
                     arguments=call["arguments"], name=call["name"]),
            self._ev("response.output_item.done", output_index=idx, item=done),
        ]  # fmt: skip

    def end(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        evs = self._close()
        kind = {"completed": "response.completed", "incomplete": "response.incomplete",
                "failed": "response.failed", "cancelled": "response.cancelled"}[response["status"]]  # fmt: skip
        return [*evs, self._ev(kind, response=response)]
