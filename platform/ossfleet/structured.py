"""Structured outputs: the grammar a request's output must follow, and the constraint that enforces it.

A request that asks for JSON (``response_format`` ``json_object`` or
``json_schema``) or forces a tool call (``tool_choice`` ``required`` or a named
function) gets a grammar over the whole harmony output: an optional reasoning
message (``analysis``, at most half of ``max_tokens``, so the value always has
room), then either the ``final`` message whose body is the JSON value, ended by
``<|return|>``, or a ``commentary`` tool call whose arguments match the tool's
JSON schema, ended by ``<|call|>``. The gateway builds and validates the
grammar (a schema the library cannot compile is a 400 before anything is
queued); the replica compiles it against its tokenizer and the engine's
sampler masks every token the grammar does not allow.

The library is llguidance (MIT; no dependencies): it builds its tokenizer from
the checkpoint's own Hugging Face tokenizer offline, knows harmony's special
tokens by name (so none can appear inside a JSON string), and computes a mask
in tens of microseconds at a 200k vocabulary. docs/architecture.md says why
not xgrammar or outlines-core.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ossfleet.errors import InvalidRequest
from ossfleet.harmony import Tool

if TYPE_CHECKING:
    import torch

    from ossfleet.harmony import Tokenizer

# JSON as json.dumps writes it by default: one space after ':' and ',', no other whitespace. A model
# left free to add whitespace (a random one does) can pad a value until max_tokens runs out.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


@dataclass(frozen=True)
class OutputFormat:
    """What the output must be: a JSON value (any object, or one matching ``schema``), or a call of one of
    ``tools`` with arguments matching its parameters."""

    kind: Literal["json_object", "json_schema", "tool_call"]
    schema: dict[str, Any] | None = None
    tools: tuple[Tool, ...] = ()


def _json_rule(schema: dict[str, Any] | None) -> str:
    s: dict[str, Any] = dict(schema) if schema else {"type": "object"}
    s["x-guidance"] = {**JSON_OPTIONS, **(s.get("x-guidance") or {})}
    return "%json " + json.dumps(s, ensure_ascii=False)


def grammar(fmt: OutputFormat, max_tokens: int, *, harmony: bool = True) -> str:
    """The llguidance (Lark) grammar of a harmony output in format ``fmt``, after ``<|start|>assistant``;
    with ``harmony=False``, of a plain-text answer (the other families): the JSON value alone, or a call as
    Llama 3.x writes it, ``{"name": ..., "parameters": ...}``; the tokenizer's end of sequence follows."""
    if harmony:
        lines = [
            "%llguidance {}",
            "start: analysis? answer",
            'analysis: <|channel|> "analysis" <|message|> thought <|end|> <|start|> "assistant"',
            f"thought[max_tokens={max(1, max_tokens // 2)}]: /(.|\\n)*/",
        ]
        value = 'answer: <|channel|> "final" <|message|> value <|return|>'
    else:
        lines = ["%llguidance {}", "start: answer"]
        value = "answer: value"
    if fmt.kind == "tool_call":
        if not fmt.tools:
            raise ValueError("a tool_call format needs at least one tool")
        lines.append("answer: " + " | ".join(f"call_{i}" for i in range(len(fmt.tools))))
        for i, t in enumerate(fmt.tools):
            if harmony:
                header = json.dumps(f"commentary to=functions.{t.name} ")
                lines.append(f'call_{i}: <|channel|> {header} <|constrain|> "json" <|message|> args_{i} <|call|>')
            else:
                head = json.dumps('{"name": ' + json.dumps(t.name) + ', "parameters": ')
                lines.append(f'call_{i}: {head} args_{i} "}}"')
            lines.append(f"args_{i}: {_json_rule(t.parameters)}")
    else:
        lines.append(value)
        lines.append(f"value: {_json_rule(fmt.schema if fmt.kind == 'json_schema' else None)}")
    return "\n".join(lines) + "\n"


def forced_tools(tools: Sequence[Tool], tool_choice: str | None) -> tuple[Tool, ...]:
    """The tools a ``tool_choice`` forces one call of: all for ``required``, the named one, or none."""
    if tool_choice in (None, "auto", "none"):
        return ()
    if tool_choice == "required":
        if not tools:
            raise InvalidRequest("tool_choice 'required' needs tools", param="tool_choice")
        return tuple(tools)
    named = [t for t in tools if t.name == tool_choice]
    if not named:
        raise InvalidRequest(
            f"tool_choice names function {tool_choice!r}, which is not among the request's tools", param="tool_choice"
        )
    return tuple(named)


class Grammars:
    """Grammars for one tokenizer: validated at the gateway, compiled into constraints at the replica.

    The llguidance tokenizer is built once, on first use (about 2-3 s at a 200k vocabulary).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._ll: Any = None

    def ll(self) -> Any:
        if self._ll is None:
            import llguidance.hf

            self._ll = llguidance.hf.from_tokenizer(self.tokenizer)  # type: ignore[arg-type]
        return self._ll

    def check(self, lark: str, param: str) -> None:
        """Raise InvalidRequest naming ``param`` if the grammar (its JSON schema, say) cannot be compiled."""
        from llguidance import LLMatcher

        is_error, messages = LLMatcher.validate_grammar_with_warnings(LLMatcher.grammar_from_lark(lark), self.ll())
        if is_error:
            # The first line says what is wrong; the rest quotes the generated grammar.
            reason = messages[0].splitlines()[0] if messages and messages[0] else "the grammar does not compile"
            raise InvalidRequest(f"{param} cannot be enforced: {reason.split(': ', 1)[-1]}", param=param)

    def constraint(self, lark: str) -> GrammarConstraint:
        return GrammarConstraint(self.ll(), lark)


class GrammarConstraint:
    """An engine :class:`~ossfleet.engine.base.TokenConstraint` over an llguidance matcher."""

    def __init__(self, ll_tokenizer: Any, lark: str) -> None:
        import torch
        from llguidance import LLMatcher

        self.matcher = LLMatcher(ll_tokenizer, LLMatcher.grammar_from_lark(lark))
        if self.matcher.is_error():
            raise ValueError(f"the grammar does not compile: {self.matcher.get_error()}")
        self.vocab = int(ll_tokenizer.vocab_size)
        self._words = torch.zeros((self.vocab + 31) // 32, dtype=torch.int32)

    def allowed(self) -> torch.Tensor:
        import numpy as np
        import torch

        if self.matcher.is_error():
            return torch.zeros(self.vocab, dtype=torch.bool)
        self.matcher.unsafe_compute_mask_ptr(self._words.data_ptr(), self._words.numel() * 4)
        bits = np.unpackbits(self._words.numpy().view(np.uint8), bitorder="little")[: self.vocab]
        return torch.from_numpy(bits.astype(bool))

    def consume(self, token_id: int) -> bool:
        return bool(self.matcher.consume_token(token_id))
