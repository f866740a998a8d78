"""A request's stream in Redis: its entries, how they are written and how they are folded.

A request's stream (``stream:<id>``) holds ``delta`` entries, then one terminal entry:

- ``delta``: ``attempt``, ``seq`` (per attempt, from 0), ``kind`` (``content`` | ``reasoning`` |
  ``tool_call``), ``text``; a tool call adds ``id``, ``name``, ``arguments``; a content delta of a
  request that asked for log-probabilities adds ``logprobs`` (a JSON list in OpenAI's chat form).
  Written by the replica (:func:`delta_event`).
- ``done``: ``finish_reason`` (``stop`` | ``length`` | ``tool_calls`` | ``cancelled``),
  ``input_tokens``, ``output_tokens``, ``cost_nusd``; from ``complete.lua`` also ``queued_ms`` (admission to
  the first lease). Written by ``complete.lua`` and ``cancel.lua``.
- ``error``: ``error`` (what went wrong), ``attempts``. Written by ``fail.lua`` and ``reap.lua``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ossfleet.errors import InvalidRequest, RequestFailed
from ossfleet.harmony import Delta

TERMINAL = ("done", "error")  # entry types that end a stream
ENDED = ("done", "cancelled", "dead")  # request states after which its stream gets no further entry


class FinishReason(StrEnum):
    """How a request ended, as its stream's ``done`` entry says it. The replica maps the engine's reason to it
    once (``ossfleet.replica.generation.finish_reason``); each API maps it once to its own words
    (``protocol.openai.openai_finish``, ``protocol.responses``'s status, gRPC's ``finish_reason`` as is)."""

    STOP = "stop"  # an end token or a stop string
    LENGTH = "length"  # max_tokens reached
    TOOL_CALLS = "tool_calls"  # the answer is a parsed tool call
    CANCELLED = "cancelled"  # the tenant cancelled it (or its client went away)


@dataclass(frozen=True)
class StreamEvent:
    entry_id: str
    fields: dict[str, str]

    @property
    def type(self) -> str:
        return self.fields.get("type", "")

    def logprobs(self) -> list[dict[str, Any]]:
        raw = self.fields.get("logprobs")
        return json.loads(raw) if raw else []


@dataclass
class Event:
    """A delta for the request's stream, with the log-probabilities of the answer tokens it carries."""

    delta: Delta
    logprobs: list[dict[str, Any]] = field(default_factory=list)


def delta_event(e: Event | Delta, attempt: int, seq: int) -> dict[str, str]:
    """A parsed delta as the fields of one stream entry."""
    ev = e if isinstance(e, Event) else Event(e)
    d = ev.delta
    out = {"type": "delta", "attempt": str(attempt), "seq": str(seq), "kind": d.kind, "text": d.text}
    if d.tool_call is not None:
        out.update(id=d.tool_call.id, name=d.tool_call.name, arguments=d.tool_call.arguments)
    if ev.logprobs:
        out["logprobs"] = json.dumps(ev.logprobs, separators=(",", ":"))
    return out


@dataclass
class Outcome:
    """A finished request, folded from its stream."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    finish_reason: FinishReason = FinishReason.STOP
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nusd: int = 0
    # The answer tokens' log-probabilities (OpenAI's chat form), where the request asked for them.
    logprobs: list[dict[str, Any]] = field(default_factory=list)


def fold(out: Outcome, ev: StreamEvent) -> None:
    """Fold one stream event into an outcome; raise RequestFailed on an error event."""
    f = ev.fields
    if ev.type == "delta":
        kind = f.get("kind")
        if kind == "content":
            out.content += f.get("text", "")
        elif kind == "reasoning":
            out.reasoning += f.get("text", "")
        elif kind == "tool_call":
            out.tool_calls.append({"id": f["id"], "name": f["name"], "arguments": f["arguments"]})
        out.logprobs += ev.logprobs()
    elif ev.type == "done":
        out.finish_reason = FinishReason(f.get("finish_reason", FinishReason.STOP))
        out.input_tokens = int(f.get("input_tokens", 0))
        out.output_tokens = int(f.get("output_tokens", 0))
        out.cost_nusd = int(f.get("cost_nusd", 0))
    elif ev.type == "error":
        if f.get("status") == "400":  # the request's own fault (the engine refused it): the caller's to fix
            raise InvalidRequest(f"the request cannot be served: {f.get('error', 'unknown error')}")
        raise RequestFailed(f"the request failed: {f.get('error', 'unknown error')}")


_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
MAX_ENTRY_PART = 2**64 - 1  # a Redis stream id is two unsigned 64-bit integers


def stream_position(entry_id: str, param: str) -> str:
    """A stream entry id from a client (``<ms>-<seq>``, each part a u64), or InvalidRequest naming ``param``.

    Checked before it reaches Redis: an id Redis cannot parse fails the one XREAD a gateway shares among
    every stream it relays, and so every other tenant's stream with it.
    """
    if not _ENTRY_ID.fullmatch(entry_id) or any(int(p) > MAX_ENTRY_PART for p in entry_id.split("-")):
        raise InvalidRequest(
            f"{param} is not a stream position of this request (<ms>-<seq>, each at most 2^64-1)", param=param
        )
    return entry_id
