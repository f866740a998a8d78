"""Structured output and logprobs through ossfleet's engine on a real tiny checkpoint (no Redis, no Ray).

The random checkpoint makes the grammar do all the work: its output must still parse and validate, every time.
Log-probabilities are checked against the model's own logits, computed here by transformers.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import asdict

import jsonschema
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ossfleet.engine.base import SamplingParams
from ossfleet.engine.batched import local_engine
from ossfleet.harmony import HarmonyRenderer, Message, SpecialIds, Tool
from ossfleet.protocol.work import WorkItem
from ossfleet.replica.generation import Generation
from ossfleet.structured import Grammars, OutputFormat, grammar

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"},
    },
    "required": ["name", "age", "member"],
    "additionalProperties": False,
}
SEARCH = Tool(
    "search", "", {"type": "object", "properties": {"q": {"type": "string", "maxLength": 8}}, "required": ["q"]}
)


@pytest.fixture(scope="module")
def tok(tiny_checkpoint):
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def grammars(tok):
    return Grammars(tok)


async def run(engine, tok, jobs):
    """Run Generations concurrently on one engine; each job is (prompt, sampling, lark or None)."""
    g = Grammars(tok)

    async def one(i, prompt, sampling, lark):
        item = WorkItem(prompt, **asdict(sampling))
        gen = Generation(tok, f"r{i}", item, constraint=g.constraint(lark) if lark else None)
        events = [e async for batch in gen.run(engine) for e in batch]
        return gen, events

    await engine.start()
    try:
        return await asyncio.gather(*[one(i, *j) for i, j in enumerate(jobs)])
    finally:
        await engine.stop()


def content(events):
    return "".join(e.delta.text for e in events if e.delta.kind == "content")


async def test_json_schema_output_validates_every_time_greedy_and_sampled_in_one_batch(tiny_checkpoint, tok):
    prompt = HarmonyRenderer(tok).render([Message("user", "Who is the member?")])
    lark = grammar(OutputFormat("json_schema", SCHEMA), 96)
    jobs = [(prompt, SamplingParams(max_tokens=96, temperature=0), lark)]
    jobs += [(prompt, SamplingParams(max_tokens=96, temperature=1.0, seed=s), lark) for s in range(5)]
    jobs += [(prompt, SamplingParams(max_tokens=24, temperature=0), None)]  # an unconstrained row beside them
    engine = local_engine(str(tiny_checkpoint), [(0, 2)], max_batch_size=8, max_context=512)
    results = await run(engine, tok, jobs)
    for gen, events in results[:-1]:
        assert gen.finish == "stop"
        jsonschema.validate(json.loads(content(events)), SCHEMA)
    # The unconstrained row is what the model says by itself: not this JSON.
    free = content(results[-1][1])
    with pytest.raises((ValueError, jsonschema.ValidationError)):
        jsonschema.validate(json.loads(free), SCHEMA)


async def test_a_forced_tool_call_ends_with_the_call_and_valid_arguments(tiny_checkpoint, tok):
    tools = (SEARCH,)
    prompt = HarmonyRenderer(tok).render([Message("user", "Find it")], tools=tools)
    # Half of max_tokens for reasoning at most; the rest holds the call's header and arguments.
    lark = grammar(OutputFormat("tool_call", tools=tools), 128)
    jobs = [(prompt, SamplingParams(max_tokens=128, temperature=1.0, seed=s), lark) for s in range(4)]
    engine = local_engine(str(tiny_checkpoint), [(0, 2)], max_batch_size=4, max_context=512)
    for gen, events in await run(engine, tok, jobs):
        assert gen.finish == "tool_calls"
        calls = [e.delta.tool_call for e in events if e.delta.kind == "tool_call"]
        assert len(calls) == 1 and calls[0] is not None and calls[0].name == "search"
        jsonschema.validate(json.loads(calls[0].arguments), SEARCH.parameters)


async def test_logprobs_are_the_models_own_after_temperature_and_cover_the_answer_tokens(tiny_checkpoint, tok):
    prompt = HarmonyRenderer(tok).render([Message("user", "Say something")])
    sampling = SamplingParams(max_tokens=20, temperature=0.7, seed=3, logprobs=3, ignore_eos=True)
    engine = local_engine(str(tiny_checkpoint), [(0, 2)], max_batch_size=2, max_context=512)
    # The engine reports each token's log-probability; compare them to transformers' logits of the same run.
    engine_lps: list = []
    await engine.start()
    try:
        from ossfleet.engine.base import EngineRequest

        tokens: list[int] = []
        async for out in engine.generate(EngineRequest("lp", prompt, sampling, SpecialIds.of(tok).stop)):
            tokens += out.token_ids
            engine_lps += out.logprobs or []
    finally:
        await engine.stop()
    assert len(engine_lps) == len(tokens) == 20
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
    ref = torch.log_softmax(logits / 0.7, dim=-1)
    for k, (t, lp) in enumerate(zip(tokens, engine_lps, strict=True)):
        assert lp.token_id == t
        assert lp.logprob == pytest.approx(float(ref[k, t]), abs=1e-3)
        best = torch.topk(ref[k], 3)
        assert [i for i, _ in lp.top] == best.indices.tolist()
        assert [v for _, v in lp.top] == pytest.approx(best.values.tolist(), abs=1e-3)
    # Through the worker's piece: entries only for the answer's tokens (not headers, not reasoning).
    lark = grammar(OutputFormat("json_schema", SCHEMA), 40)
    engine = local_engine(str(tiny_checkpoint), [(0, 2)], max_batch_size=2, max_context=512)
    _, events = (await run(engine, tok, [(prompt, SamplingParams(max_tokens=40, temperature=0, logprobs=0), lark)]))[0]
    entries = [x for e in events for x in e.logprobs]
    text = content(events)
    # The tokens' bytes make up the answer exactly (a token may hold part of a character: its text then
    # shows U+FFFD, as OpenAI's does, and its bytes are what count).
    assert bytes([b for x in entries for b in x["bytes"]]).decode() == text
    assert all(x["top_logprobs"] == [] and x["logprob"] <= 0 for x in entries)
    # Greedy within the grammar: each answer token was the likeliest the grammar allowed: log-probability of
    # a token forced by the grammar (a '"', a key) is 0.
    assert any(math.isclose(x["logprob"], 0.0, abs_tol=1e-6) for x in entries)
