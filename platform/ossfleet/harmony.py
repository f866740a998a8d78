"""The gpt-oss harmony chat format: render prompts, parse output while it streams.

Rendering turns OpenAI-style chat messages into harmony token ids. Structural
tokens (``<|start|>``, ``<|channel|>``...) are inserted by id, and every piece
of caller text is tokenized with special tokens split, so a message that
*contains* the string ``<|start|>`` cannot forge a turn.

Parsing is a small state machine over generated token ids that splits the
output into reasoning (the ``analysis`` channel), the answer (``final``) and
tool calls (``commentary`` with a ``to=functions.NAME`` recipient).

Why not the ``openai-harmony`` package: it downloads its vocabulary file at
run time, which fails offline (and in many enterprise clusters), and it needs
the full o200k vocabulary, so it cannot drive the tiny test checkpoints. This
module works from whatever tokenizer the checkpoint ships.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

ReasoningEffort = Literal["low", "medium", "high"]

SPECIAL = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>")
DEFAULT_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer harmony needs."""

    def encode(self, text: Any, *args: Any, **kwargs: Any) -> Any: ...
    def decode(self, token_ids: Any, *args: Any, **kwargs: Any) -> Any: ...
    def convert_tokens_to_ids(self, tokens: Any) -> Any: ...


@dataclass(frozen=True)
class SpecialIds:
    start: int
    end: int
    message: int
    channel: int
    return_: int
    call: int
    constrain: int

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> SpecialIds:
        ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL]
        unk = getattr(tokenizer, "unk_token_id", None)
        missing = [t for t, i in zip(SPECIAL, ids, strict=True) if i is None or (unk is not None and i == unk)]
        if missing:
            raise ValueError(f"tokenizer lacks harmony special tokens {missing}; is this a gpt-oss checkpoint?")
        return cls(*ids)

    def all_special(self, tokenizer: Tokenizer) -> frozenset[int]:
        """Every special token id: the harmony ones and whatever else the tokenizer marks special."""
        extra = getattr(tokenizer, "all_special_ids", None) or []
        return frozenset([*extra, self.start, self.end, self.message, self.channel, self.return_, self.call,
                          self.constrain])  # fmt: skip

    @property
    def stop(self) -> tuple[int, int]:
        """The assistant's stop tokens: end of answer, and a tool call."""
        return (self.return_, self.call)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    """One chat message in OpenAI terms (role system|developer|user|assistant|tool)."""

    role: str
    content: str = ""
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    name: str | None = None  # for role "tool": the function that answered
    tool_call_id: str | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


# -- rendering -----------------------------------------------------------------


def _ts_type(schema: dict[str, Any]) -> str:
    """A JSON schema as the TypeScript-like type harmony's tool section uses."""
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    t = schema.get("type")
    if t == "array":
        return f"{_ts_type(schema.get('items', {}))}[]"
    if t == "object":
        props = schema.get("properties") or {}
        if not props:
            return "object"
        req = set(schema.get("required", []))
        inner = ", ".join(f"{k}{'' if k in req else '?'}: {_ts_type(v)}" for k, v in props.items())
        return "{ " + inner + " }"
    return {"integer": "number", "number": "number", "string": "string", "boolean": "boolean"}.get(str(t), "any")


def render_tools(tools: Sequence[Tool]) -> str:
    lines = ["# Tools", "", "## functions", "", "namespace functions {", ""]
    for t in tools:
        if t.description:
            lines.append(f"// {t.description}")
        props = t.parameters.get("properties") or {}
        if not props:
            lines.append(f"type {t.name} = () => any;")
        else:
            req = set(t.parameters.get("required", []))
            lines.append(f"type {t.name} = (_: {{")
            for k, v in props.items():
                if v.get("description"):
                    lines.append(f"// {v['description']}")
                lines.append(f"{k}{'' if k in req else '?'}: {_ts_type(v)},")
            lines.append("}) => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def system_text(effort: ReasoningEffort, has_tools: bool, today: str | None = None) -> str:
    today = today or datetime.now(UTC).strftime("%Y-%m-%d")
    text = (
        f"{DEFAULT_IDENTITY}\nKnowledge cutoff: {KNOWLEDGE_CUTOFF}\nCurrent date: {today}\n\n"
        f"Reasoning: {effort}\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message."
    )
    if has_tools:
        text += "\nCalls to these tools must go to the commentary channel: 'functions'."
    return text


class HarmonyRenderer:
    """Renders chat messages into harmony prompt token ids for one tokenizer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self.ids = SpecialIds.of(tokenizer)
        self._cache: dict[str, list[int]] = {}

    def _text(self, s: str) -> list[int]:
        return list(self.tok.encode(s, add_special_tokens=False, split_special_tokens=True)) if s else []

    def _fixed(self, s: str) -> list[int]:
        """:meth:`_text` of the format's own strings (roles, channels, the system message of a day), which
        repeat in every prompt: tokenized once (caller text never goes through here)."""
        ids = self._cache.get(s)
        if ids is None:
            if len(self._cache) >= 256:  # the system message changes daily: keep the cache small
                self._cache.clear()
            ids = self._cache[s] = self._text(s)
        return ids

    def render(
        self,
        messages: Sequence[Message],
        *,
        effort: ReasoningEffort = "medium",
        tools: Sequence[Tool] = (),
        today: str | None = None,
    ) -> list[int]:
        """Prompt ids ending in ``<|start|>assistant``, ready for generation.

        OpenAI ``system`` and ``developer`` messages become the harmony
        developer message ("# Instructions"); the harmony system message
        carries the identity, the date and the reasoning effort.
        """
        i = self.ids
        out: list[int] = [
            i.start,
            *self._fixed("system"),
            i.message,
            *self._fixed(system_text(effort, bool(tools), today)),
            i.end,
        ]
        instructions = "\n\n".join(m.content for m in messages if m.role in ("system", "developer") and m.content)
        if instructions or tools:
            dev = f"# Instructions\n\n{instructions}" if instructions else ""
            if tools:
                dev = f"{dev}\n\n{render_tools(tools)}" if dev else render_tools(tools)
            out += [i.start, *self._fixed("developer"), i.message, *self._text(dev), i.end]
        names = {c.id: c.name for m in messages for c in m.tool_calls}
        for m in messages:
            if m.role == "user":
                out += [i.start, *self._fixed("user"), i.message, *self._text(m.content), i.end]
            elif m.role == "assistant":
                if m.reasoning:
                    out += [i.start, *self._fixed("assistant"), i.channel, *self._fixed("analysis"), i.message]
                    out += [*self._text(m.reasoning), i.end]
                for c in m.tool_calls:
                    out += [i.start, *self._fixed("assistant"), i.channel]
                    out += self._text(f"commentary to=functions.{c.name} ")
                    out += [i.constrain, *self._fixed("json"), i.message, *self._text(c.arguments), i.call]
                if m.content:
                    out += [i.start, *self._fixed("assistant"), i.channel, *self._fixed("final"), i.message]
                    out += [*self._text(m.content), i.end]
            elif m.role == "tool":
                name = m.name or names.get(m.tool_call_id or "", "tool")
                out += [i.start, *self._text(f"functions.{name} to=assistant"), i.channel]
                out += [*self._fixed("commentary"), i.message, *self._text(m.content), i.end]
        out += [i.start, *self._fixed("assistant")]
        return out


# -- streaming parse ---------------------------------------------------------------

Kind = Literal["reasoning", "content", "tool_call"]


@dataclass(frozen=True)
class Delta:
    """A piece of parsed output: reasoning or content text, or a whole tool call."""

    kind: Kind
    text: str = ""
    tool_call: ToolCall | None = None


class IncrementalDecoder:
    """The text of a growing run of token ids, decoding a short window per call, not the whole run.

    vLLM's method: keep two offsets into the ids; decode from ``prefix`` to
    ``read`` (text already sent) and from ``prefix`` to the end, and send the
    difference; then move both offsets up. A trailing partial UTF-8 sequence
    (decoded as U+FFFD) is held back until the bytes that complete it arrive,
    or until :meth:`flush`. The cost of a token does not grow with the message.
    """

    CONTEXT = 6

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def feed(self, token_ids: Sequence[int]) -> str:
        self.ids.extend(token_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read == len(self.ids):
            return ""
        sent = self.tok.decode(self.ids[self._prefix : self._read], skip_special_tokens=False)
        text = self.tok.decode(self.ids[self._prefix :], skip_special_tokens=False)
        if len(text) <= len(sent) or (not final and text.endswith("\ufffd")):
            return ""
        # The next window starts a few ids back from what is now sent (context for a character split
        # across ids), never at the start of a long run fed at once.
        self._prefix, self._read = max(self._read, len(self.ids) - self.CONTEXT), len(self.ids)
        return text[len(sent) :]


@dataclass
class _Msg:
    channel: str = "final"
    recipient: str | None = None
    ids: list[int] = field(default_factory=list)
    text: IncrementalDecoder | None = None  # the body's decoder, for a message sent as text


class HarmonyStreamParser:
    """Splits generated token ids into reasoning, content and tool calls, incrementally.

    Generation starts right after the prompt's ``<|start|>assistant``, so the
    first thing expected is a header (``<|channel|>final<|message|>``). A
    model that skips the header (a tiny random one does) has its text taken as
    final content rather than dropped.
    """

    # A header longer than this is not a header: flush it as content.
    MAX_HEADER = 48

    def __init__(self, tokenizer: Tokenizer, request_id: str = "call") -> None:
        self.tok = tokenizer
        self.ids = SpecialIds.of(tokenizer)
        # Special tokens are structure, never text: one inside a message body is dropped.
        self._special = self.ids.all_special(tokenizer)
        self.request_id = request_id
        self._header: list[int] | None = []  # None while inside a message body
        self._after_start = False  # the header began with <|start|>, so a role comes first
        self._msg: _Msg | None = None
        self._calls = 0  # tool calls parsed so far
        self.stopped_by: str | None = None  # "return", "call" or None

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def _open(self, header_ids: list[int]) -> None:
        text = self._decode(header_ids)
        channel, recipient = "final", None
        if "<|channel|>" in text:
            rest = text.split("<|channel|>", 1)[1].replace("<|constrain|>", " ")
            words = rest.split()
            if words:
                channel = words[0]
            for w in words[1:]:
                if w.startswith("to="):
                    recipient = w[3:]
        for w in text.replace("<|channel|>", " ").split():
            if w.startswith("to=") and recipient is None:
                recipient = w[3:]
        self._msg = _Msg(channel=channel, recipient=recipient)
        self._header = None
        self._after_start = False

    def _flush_text(self, final: bool = False) -> list[Delta]:
        m = self._msg
        if m is None or m.recipient is not None:
            return []
        if m.text is None:
            m.text = IncrementalDecoder(self.tok)
        new = m.text.feed(m.ids[len(m.text.ids) :])
        if final:
            new += m.text.flush()
        if not new:
            return []
        return [Delta("reasoning" if m.channel == "analysis" else "content", new)]

    @property
    def calls(self) -> int:
        """Tool calls parsed so far."""
        return self._calls

    def _close(self) -> list[Delta]:
        out = self._flush_text(final=True)
        m = self._msg
        if m is not None and m.recipient is not None:
            name = m.recipient.removeprefix("functions.")
            args = self._decode(m.ids).strip()
            self._calls += 1
            out.append(Delta("tool_call", tool_call=ToolCall(f"call_{self.request_id}_{self._calls}", name, args)))
        self._msg = None
        self._header = []
        return out

    def feed(self, token_ids: Sequence[int]) -> list[Delta]:
        """Parse newly generated ids; returns the deltas they complete."""
        i = self.ids
        out: list[Delta] = []
        for t in token_ids:
            if self.stopped_by is not None:
                break
            if self._header is not None:
                if t == i.message:
                    self._open(self._header)
                elif t == i.start:
                    self._header = []
                    self._after_start = True
                elif (
                    not self._header
                    and not self._after_start
                    and t != i.channel
                    and t not in (i.end, i.return_, i.call, i.constrain)
                ):
                    # No header at all: take the text as the final answer.
                    self._msg = _Msg()
                    self._header = None
                    if t not in self._special:
                        self._msg.ids.append(t)
                else:
                    self._header.append(t)
                    if len(self._header) > self.MAX_HEADER:
                        self._msg = _Msg(ids=[x for x in self._header if x not in self._special])
                        self._header = None
                continue
            if t in (i.end, i.return_, i.call):
                out += self._close()
                if t == i.return_:
                    self.stopped_by = "return"
                elif t == i.call:
                    self.stopped_by = "call"
                continue
            assert self._msg is not None
            if t not in self._special:
                self._msg.ids.append(t)
        out += self._flush_text()
        return out

    def answering(self, token_id: int) -> bool:
        """Whether the token just fed went into the answer's text (the body of a message for the user,
        not reasoning, a header or a tool call's arguments)."""
        m = self._msg
        return (
            self._header is None
            and m is not None
            and m.recipient is None
            and m.channel != "analysis"
            and token_id not in self._special
        )

    def finish(self) -> list[Delta]:
        """The end of generation (stop token, length limit or abort): flush what is open."""
        if self._msg is not None:
            return self._close()
        return []


def raw_prompt_ids(tok: Any, prompt: str | tuple[int, ...], *, bos: bool = False) -> list[int]:
    """A raw completion's prompt as token ids: text tokenized as is (``bos``: with what the tokenizer adds
    to a text, its BOS), token ids checked against the tokenizer's vocabulary (an id past it would fail in
    the engine, after admission)."""
    if isinstance(prompt, str):
        return list(tok.encode(prompt, add_special_tokens=bos))
    vocab = len(tok)
    bad = next((t for t in prompt if t >= vocab), None)
    if bad is not None:
        from ossfleet.errors import InvalidRequest

        raise InvalidRequest(f"prompt: token id {bad} is outside the model's vocabulary of {vocab}", param="prompt")
    return list(prompt)
