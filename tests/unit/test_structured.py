"""Structured-output grammars over the tiny checkpoint's own tokenizer (llguidance), sampled from random logits."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from transformers import AutoTokenizer

from ossfleet.errors import InvalidRequest
from ossfleet.harmony import HarmonyStreamParser, SpecialIds, Tool
from ossfleet.structured import Grammars, OutputFormat, forced_tools, grammar

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "celsius": {"type": "integer", "minimum": -60, "maximum": 60},
        "sky": {"enum": ["clear", "cloudy", "rain"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
    },
    "required": ["city", "celsius", "sky"],
    "additionalProperties": False,
}
LOOKUP = Tool("lookup", "", {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]})
PING = Tool("ping")


@pytest.fixture(scope="module")
def tok(tiny_checkpoint):
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def grammars(tok):
    return Grammars(tok)


def sample_under(grammars: Grammars, lark: str, seed: int, stop: tuple[int, ...], limit: int = 400) -> list[int]:
    """Tokens drawn from random logits, each within what the grammar allows, up to a stop token."""
    c = grammars.constraint(lark)
    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    while len(out) < limit:
        logits = torch.randn(c.vocab, generator=gen) * 3
        logits[~c.allowed()] = float("-inf")
        t = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        assert c.consume(t)
        out.append(t)
        if t in stop:
            return out
    raise AssertionError(f"no stop token within {limit} tokens")


@pytest.mark.parametrize("seed", range(6))
def test_a_json_schema_answer_always_parses_and_validates(tok, grammars, seed):
    ids = SpecialIds.of(tok)
    out = sample_under(grammars, grammar(OutputFormat("json_schema", WEATHER), 64), seed, ids.stop)
    assert out[-1] == ids.return_
    parser = HarmonyStreamParser(tok)
    deltas = parser.feed(out) + parser.finish()
    content = "".join(d.text for d in deltas if d.kind == "content")
    jsonschema.validate(json.loads(content), WEATHER)
    # No special token sits inside the value (the body after the final header's <|message|>).
    body = out[len(out) - 1 - out[::-1].index(ids.message) : -1][1:]
    assert body and not set(body) & ids.all_special(tok)
    # The reasoning before it (if any) is at most half of max_tokens.
    reasoning = [d for d in deltas if d.kind == "reasoning"]
    assert len(tok.encode("".join(d.text for d in reasoning), add_special_tokens=False)) <= 40


@pytest.mark.parametrize("seed", range(4))
def test_a_forced_tool_call_names_one_of_the_tools_with_valid_arguments(tok, grammars, seed):
    ids = SpecialIds.of(tok)
    out = sample_under(grammars, grammar(OutputFormat("tool_call", tools=(LOOKUP, PING)), 64), seed, ids.stop)
    assert out[-1] == ids.call
    parser = HarmonyStreamParser(tok, "r")
    calls = [d.tool_call for d in parser.feed(out) + parser.finish() if d.kind == "tool_call"]
    assert len(calls) == 1 and parser.stopped_by == "call"
    call = calls[0]
    assert call is not None and call.name in ("lookup", "ping")
    args = json.loads(call.arguments)
    schema = LOOKUP.parameters if call.name == "lookup" else {"type": "object"}
    jsonschema.validate(args, schema)


def test_json_object_is_an_object(tok, grammars):
    ids = SpecialIds.of(tok)
    out = sample_under(grammars, grammar(OutputFormat("json_object"), 32), 3, ids.stop, limit=2000)
    parser = HarmonyStreamParser(tok)
    content = "".join(d.text for d in parser.feed(out) + parser.finish() if d.kind == "content")
    assert isinstance(json.loads(content), dict)


def test_a_schema_the_library_cannot_enforce_is_refused_naming_the_field(grammars):
    bad = {"type": "object", "properties": {"a": {"type": "string", "format": "no-such-format"}}}
    with pytest.raises(InvalidRequest, match="no-such-format") as e:
        grammars.check(grammar(OutputFormat("json_schema", bad), 16), "response_format")
    assert e.value.param == "response_format"
    with pytest.raises(InvalidRequest, match="/nowhere"):
        grammars.check(grammar(OutputFormat("json_schema", {"$ref": "#/nowhere"}), 16), "response_format")


def test_tool_choice_forces_the_named_tool_or_any_for_required():
    tools = (LOOKUP, PING)
    assert forced_tools(tools, "auto") == () and forced_tools(tools, None) == () and forced_tools(tools, "none") == ()
    assert forced_tools(tools, "required") == tools
    assert forced_tools(tools, "ping") == (PING,)
    with pytest.raises(InvalidRequest, match="'nope'") as e:
        forced_tools(tools, "nope")
    assert e.value.param == "tool_choice"
    with pytest.raises(InvalidRequest, match="needs tools"):
        forced_tools((), "required")
