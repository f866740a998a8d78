"""What agent frameworks send, through the official openai client and LangChain, against a live platform.

Structured output (response_format, forced tool calls), logprobs, n and prompt lists. The tiny random
checkpoints make the grammar do all the work: their answers must still parse and validate every time.
"""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from ossfleet.control.keyspace import KeySpace
from ossfleet.redisdb import connect

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a record up",
        "parameters": {
            "type": "object",
            "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 999}, "full": {"type": "boolean"}},
            "required": ["id", "full"],
            "additionalProperties": False,
        },
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}},
            "required": ["city"],
            "additionalProperties": False,  # as OpenAI's strict mode asks: else any further key may follow
        },
    },
}
USER = [{"role": "user", "content": "Tell me about a person"}]


class Person(BaseModel):
    name: str = Field(max_length=10)
    age: int = Field(ge=0, le=120)


@pytest.fixture(scope="module")
def client(platform):
    return openai.OpenAI(base_url=platform.base_url + "/v1", api_key=platform.keys["acme"], max_retries=0)


def queue_keys(platform) -> set[bytes]:
    r = connect(platform.redis_url)
    ks = KeySpace(platform.cfg.redis.namespace)
    # Not the tenant registry (seeded from the config on the first request a gateway serves) nor API keys.
    other = tuple(
        (ks.prefix + f).encode() for f in ("apikey:", "tenant:", "tenants", "tenantseed", "tenantkeys:", "audit")
    )
    keys = {k for pattern in ks.patterns() for k in r.scan_iter(match=pattern) if not k.startswith(other)}
    r.close()
    return keys


# -- structured output --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-oss-20b", "gpt-oss-120b"])
def test_structured_json_schema_answers_validate_greedy_and_sampled(client, model):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for seed in (None, 1, 2):
        extra = {"temperature": 0} if seed is None else {"temperature": 1.0, "seed": seed}
        resp = client.chat.completions.create(model=model, messages=USER, max_tokens=128, response_format=fmt, **extra)
        assert resp.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(resp.choices[0].message.content), PERSON)


def test_structured_parse_with_a_pydantic_model_and_json_object(client):
    # The client's own parse(): it sends the pydantic model's schema (strict) and parses the answer.
    parsed = client.chat.completions.parse(model="gpt-oss-20b", messages=USER, max_tokens=128, response_format=Person)
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person) and 0 <= person.age <= 120
    resp = client.chat.completions.create(
        model="gpt-oss-20b", messages=USER, max_tokens=256, temperature=0, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(resp.choices[0].message.content), dict)


def test_structured_streamed_json_schema_answer_validates(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    chunks = list(
        client.chat.completions.create(
            model="gpt-oss-20b", messages=USER, max_tokens=128, seed=5, response_format=fmt, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"] and text.startswith("{")
    jsonschema.validate(json.loads(text), PERSON)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "weather"}}])
def test_tool_choice_forces_a_call_with_valid_arguments(client, choice):
    for seed in (3, 4):
        resp = client.chat.completions.create(
            model="gpt-oss-20b", messages=[{"role": "user", "content": "Look up 7"}], tools=[LOOKUP, WEATHER],
            tool_choice=choice, max_tokens=128, seed=seed,
        )  # fmt: skip
        c = resp.choices[0]
        assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1
        call = c.message.tool_calls[0].function
        tool = {"lookup": LOOKUP, "weather": WEATHER}[call.name]
        if isinstance(choice, dict):
            assert call.name == "weather"
        jsonschema.validate(json.loads(call.arguments), tool["function"]["parameters"])


def test_structured_output_refusals_name_the_field_and_change_nothing(platform):
    before = queue_keys(platform)
    h = {"authorization": f"Bearer {platform.keys['acme']}"}
    base = {"model": "gpt-oss-20b", "messages": USER, "max_tokens": 16}
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}}
    cases = [
        ({"response_format": bad_schema}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "json_object"}, "min_tokens": 4}, "min_tokens"),
        ({"tools": [LOOKUP], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"top_logprobs": 2}, None),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"n": 9}, "n"),
    ]
    for extra, param in cases:
        r = httpx.post(platform.base_url + "/v1/chat/completions", json={**base, **extra}, headers=h, timeout=60)
        assert r.status_code == 400, (extra, r.text)
        err = r.json()["error"]
        assert err["message"]
        if param is not None:
            assert err["param"] is not None and err["param"].startswith(param), (extra, err)
    assert queue_keys(platform) == before


# -- logprobs ---------------------------------------------------------------------------------------


def test_chat_logprobs_cover_the_answer_with_top_alternatives(client):
    resp = client.chat.completions.create(
        model="gpt-oss-20b", messages=USER, max_tokens=24, temperature=0, logprobs=True, top_logprobs=2,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    c = resp.choices[0]
    entries = c.logprobs.content
    # The tokens' bytes make up the answer (the random model's bytes need not be valid UTF-8: both sides
    # show U+FFFD for what is not).
    assert entries and bytes([b for e in entries for b in e.bytes]).decode(errors="replace") == c.message.content
    for e in entries:
        assert len(e.top_logprobs) == 2 and e.logprob <= 0
        # Greedy: the sampled token is the likeliest.
        assert e.top_logprobs[0].logprob == pytest.approx(e.logprob, abs=1e-5)
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob
    streamed = list(
        client.chat.completions.create(
            model="gpt-oss-20b", messages=USER, max_tokens=24, temperature=0, logprobs=True, stream=True,
            extra_body={"ignore_eos": True},
        )
    )  # fmt: skip
    lps = [
        e.logprob for ch in streamed if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content
    ]
    assert lps == pytest.approx([e.logprob for e in entries], abs=1e-5)


def test_completions_logprobs_in_the_legacy_form(client):
    resp = client.completions.create(
        model="gpt-oss-20b", prompt="The quick brown fox", max_tokens=8, temperature=0, logprobs=2,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    lp = resp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 8
    # The sampled token and the 2 most likely: greedy, the sampled one is among them.
    assert all(tok in top and len(top) <= 3 for tok, top in zip(lp.tokens, lp.top_logprobs, strict=True))
    assert lp.text_offset[0] == 0


# -- n and prompt lists -------------------------------------------------------------------------------


def test_n_choices_each_their_own_request_billed_as_the_sum(client, platform):
    one = client.chat.completions.create(model="gpt-oss-20b", messages=USER, max_tokens=12, seed=11)
    three = client.chat.completions.with_raw_response.create(
        model="gpt-oss-20b", messages=USER, max_tokens=12, seed=11, n=3
    )
    resp = three.parse()
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert len(three.headers["x-ossfleet-request-id"].split(",")) == 3
    # Choice 0 keeps the request's seed; the others draw from seeds derived from it.
    assert resp.choices[0].message.content == one.choices[0].message.content
    assert len({c.message.content for c in resp.choices}) > 1
    assert resp.usage.prompt_tokens == 3 * one.usage.prompt_tokens
    stream = client.chat.completions.create(
        model="gpt-oss-20b", messages=USER, max_tokens=12, seed=11, n=2, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    texts = ["", ""]
    finishes = [None, None]
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] += c.delta.content or ""
            finishes[c.index] = c.finish_reason or finishes[c.index]
    assert texts == [c.message.content or "" for c in resp.choices[:2]]
    assert all(finishes)
    usage = chunks[-1].usage
    assert usage.prompt_tokens == 2 * one.usage.prompt_tokens and usage.completion_tokens > 0


def test_completions_take_a_list_of_prompts_n_times_each(client):
    prompts = ["The quick brown fox", "Once upon a time"]
    singles = [
        client.completions.create(model="gpt-oss-20b", prompt=p, max_tokens=6, temperature=0).choices[0].text
        for p in prompts
    ]
    resp = client.completions.create(model="gpt-oss-20b", prompt=prompts, max_tokens=6, temperature=0, n=2)
    assert [c.index for c in resp.choices] == [0, 1, 2, 3]
    assert [c.text for c in resp.choices] == [singles[0], singles[0], singles[1], singles[1]]


# -- HTTP streams resume -----------------------------------------------------------------------------------


def sse_events(lines, stop_after: int | None = None) -> list[tuple[str | None, str]]:
    """(id, data) of each server-sent event read from ``lines``, up to ``stop_after`` events."""
    out, eid = [], None
    for line in lines:
        if line.startswith("id: "):
            eid = line[4:]
        elif line.startswith("data: "):
            out.append((eid, line[6:]))
            eid = None
            if stop_after is not None and len(out) == stop_after:
                break
    return out


def test_an_sse_stream_resumes_after_the_last_event_id_losing_and_repeating_nothing(platform):
    h = {"authorization": f"Bearer {platform.keys['acme']}"}
    body = {"model": "gpt-oss-20b", "messages": USER, "max_tokens": 40, "temperature": 0, "n": 2, "stream": True,
            "ignore_eos": True}  # fmt: skip
    url = platform.base_url + "/v1/chat/completions"

    def texts(events):
        out = ["", ""]
        for _, data in events:
            if data != "[DONE]":
                for c in json.loads(data)["choices"]:
                    out[c["index"]] += c["delta"].get("content") or ""
        return out

    with httpx.stream("POST", url, json=body, headers={**h, "idempotency-key": "whole"}, timeout=60) as r:
        whole = sse_events(r.iter_lines())
    key = {**h, "idempotency-key": "cut"}
    with httpx.stream("POST", url, json=body, headers=key, timeout=60) as r:
        first = sse_events(r.iter_lines(), stop_after=6)  # 2 opening chunks, then 4 with ids; then the client drops
    last_id = first[-1][0]
    assert last_id and len(last_id.split(",")) == 2
    with httpx.stream("POST", url, json=body, headers={**key, "last-event-id": last_id}, timeout=60) as r:
        rest = sse_events(r.iter_lines())
    assert rest[-1][1] == "[DONE]"
    ids = [i for i, _ in first + rest if i]
    assert len(ids) == len(set(ids))  # nothing repeated
    assert texts(first + rest) == texts(whole)  # nothing lost (greedy: both runs give the same tokens)
    # A Last-Event-ID that is not this stream's is refused.
    bad = httpx.post(url, json=body, headers={**key, "last-event-id": "nonsense"}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"


# -- the Responses API -------------------------------------------------------------------------------------


def test_responses_create_retrieve_continue_and_delete(client, platform):
    first = client.responses.create(
        model="gpt-oss-20b", input="Hello there", instructions="Answer briefly.", max_output_tokens=24,
        temperature=0, reasoning={"effort": "low"},
    )  # fmt: skip
    assert first.id.startswith("resp_") and first.status in ("completed", "incomplete")
    assert 0 < first.usage.output_tokens <= 24
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    assert first.output and all(i.type in ("reasoning", "message") for i in first.output)
    assert client.responses.retrieve(first.id).output_text == first.output_text
    # previous_response_id: the first's input and output come before the new input (its instructions do not).
    second = client.responses.create(
        model="gpt-oss-20b", input="And then?", previous_response_id=first.id, max_output_tokens=8, temperature=0
    )
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens
    # Another tenant cannot read, continue or delete it.
    other = openai.OpenAI(base_url=platform.base_url + "/v1", api_key=platform.keys["globex"], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="gpt-oss-20b", input="x", previous_response_id=first.id, max_output_tokens=4)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    unstored = client.responses.create(model="gpt-oss-20b", input="x", max_output_tokens=4, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


def test_responses_structured_output_and_a_forced_function_call_round_trip(client):
    parsed = client.responses.parse(model="gpt-oss-20b", input="Who?", max_output_tokens=128, text_format=Person)
    assert isinstance(parsed.output_parsed, Person)
    tool = {"type": "function", "name": "lookup", "parameters": LOOKUP["function"]["parameters"], "strict": True}
    resp = client.responses.create(
        model="gpt-oss-20b", input="Look up 7", tools=[tool], tool_choice={"type": "function", "name": "lookup"},
        max_output_tokens=128, temperature=0,
    )  # fmt: skip
    calls = [i for i in resp.output if i.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "lookup"
    jsonschema.validate(json.loads(calls[0].arguments), tool["parameters"])
    # The tool's output goes back as an item; the conversation continues from the stored response.
    after = client.responses.create(
        model="gpt-oss-20b", previous_response_id=resp.id, tools=[tool], max_output_tokens=16, temperature=0,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"found": true}'}],
    )  # fmt: skip
    assert after.status in ("completed", "incomplete") and after.usage.input_tokens > resp.usage.input_tokens


def test_responses_stream_events_in_order_and_agree_with_the_stored_response(client):
    events = list(client.responses.create(model="gpt-oss-20b", input="Stream it", max_output_tokens=24,
                                          temperature=0, stream=True))  # fmt: skip
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == final.output_text == client.responses.retrieve(final.id).output_text
    # Every item added is done, in order.
    added = [e.output_index for e in events if e.type == "response.output_item.added"]
    done = [e.output_index for e in events if e.type == "response.output_item.done"]
    assert added == done == list(range(len(final.output)))
    # The client's stream helper wants a response.completed event: a structured answer always completes (the
    # random model, left alone, may not stop before max_output_tokens).
    fmt = {"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}}
    whole = client.responses.create(model="gpt-oss-20b", input="Who?", max_output_tokens=128, temperature=0, text=fmt)
    assert whole.status == "completed"
    with client.responses.stream(
        model="gpt-oss-20b", input="Who?", max_output_tokens=128, temperature=0, text_format=Person
    ) as s:
        final = s.get_final_response()
    assert isinstance(final.output_parsed, Person)


def test_responses_refusals_name_the_field(platform):
    h = {"authorization": f"Bearer {platform.keys['acme']}"}
    for body, param in (
        ({"input": [{"type": "web_search_call"}]}, "input[0].type"),
        ({"input": "x", "previous_response_id": "resp_nope"}, "response_id"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ):
        r = httpx.post(platform.base_url + "/v1/responses", json={"model": "gpt-oss-20b", **body}, headers=h)
        assert r.status_code in (400, 404), (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.json())


# -- gRPC parity ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpc_client(platform):
    from ossfleet.client import OssfleetClient

    with OssfleetClient(platform.grpc_target, platform.keys["acme"]) as c:
        yield c


def test_grpc_structured_output_logprobs_and_n(grpc_client):
    import grpc

    from ossfleet.v1 import ossfleet_pb2 as pb

    fmt = pb.ResponseFormat(type="json_schema", schema_json=json.dumps(PERSON))
    reply = grpc_client.generate("gpt-oss-20b", [("user", "Who?")], max_tokens=128, seed=2, response_format=fmt,
                                 n=2, logprobs=True, top_logprobs=1, timeout=120)  # fmt: skip
    assert len(reply.choices) == 2 and reply.choices[0].content == reply.content
    for c in reply.choices:
        jsonschema.validate(json.loads(c.content), PERSON)
        assert c.finish_reason == "stop" and all(len(e.top_logprobs) == 1 for e in c.logprobs)
        assert b"".join(e.bytes for e in c.logprobs).decode() == c.content
    # Usage is both choices' (headers and reasoning included), so more than their answers' tokens.
    assert reply.usage.output_tokens > sum(len(c.logprobs) for c in reply.choices)
    tool = pb.Tool(name="lookup", parameters_json=json.dumps(LOOKUP["function"]["parameters"]))
    chunks = list(grpc_client.stream("gpt-oss-20b", [("user", "Look up 7")], max_tokens=128, seed=3, tools=[tool],
                                     tool_choice="lookup", n=2, timeout=120))  # fmt: skip
    calls = [c.tool_call for c in chunks if c.HasField("tool_call")]
    assert sorted(c.index for c in chunks if c.finish_reason) == [0, 1]
    assert len(calls) == 2 and all(c.name == "lookup" for c in calls)
    for c in calls:
        jsonschema.validate(json.loads(c.arguments), LOOKUP["function"]["parameters"])
    assert len({c.request_id for c in chunks}) == 2
    with pytest.raises(grpc.RpcError) as e:
        grpc_client.generate("gpt-oss-20b", [("user", "x")], max_tokens=8, tool_choice="nope", timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "nope" in e.value.details()


# -- LangChain, unchanged -------------------------------------------------------------------------------


def test_langchain_chat_openai_invoke_stream_tools_and_structured_output(platform):
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="gpt-oss-20b", base_url=platform.base_url + "/v1", api_key=platform.keys["acme"], max_tokens=256,
        temperature=0, max_retries=0,
    )  # fmt: skip
    assert isinstance(llm.invoke("Hello").content, str)
    assert "".join(str(c.content) for c in llm.stream("Hello")) == llm.invoke("Hello").content

    @tool
    def lookup(id: Annotated[int, Field(ge=1, le=99)]) -> str:
        """Look a record up by id."""
        return str(id)

    class Fetch(BaseModel):
        """Fetch a record."""

        id: int = Field(ge=1, le=999)

    # strict=True, as OpenAI's strict mode: no further keys. Bounds keep a random model's values short (an
    # unbounded integer may take digits until max_tokens).
    msg = llm.bind_tools([Fetch], tool_choice="Fetch", strict=True).invoke("Fetch 3")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "Fetch"
    assert 1 <= msg.tool_calls[0]["args"]["id"] <= 999
    msg = llm.bind_tools([lookup, Fetch], tool_choice="any", strict=True).invoke("Look up 3")
    assert msg.tool_calls and msg.tool_calls[0]["name"] in ("lookup", "Fetch")
    for method in ("json_schema", "function_calling"):
        person = llm.with_structured_output(Person, method=method, strict=True).invoke("Tell me about a person")
        assert isinstance(person, Person), method
    data = llm.with_structured_output(None, method="json_mode").invoke("Give me JSON")
    assert isinstance(data, dict)
    # The same through the Responses API.
    rllm = ChatOpenAI(
        model="gpt-oss-20b", base_url=platform.base_url + "/v1", api_key=platform.keys["acme"], max_tokens=128,
        temperature=0, max_retries=0, use_responses_api=True,
    )  # fmt: skip
    reply = rllm.invoke("Hello")
    assert reply.response_metadata["id"].startswith("resp_")
    assert "".join(str(c.text) for c in rllm.stream("Hello")) == reply.text
    msg = rllm.bind_tools([Fetch], tool_choice="Fetch", strict=True).invoke("Fetch 3")
    assert msg.tool_calls and 1 <= msg.tool_calls[0]["args"]["id"] <= 999
    person = rllm.with_structured_output(Person, method="json_schema", strict=True).invoke("Tell me about a person")
    assert isinstance(person, Person)


# -- fine-tunes: tenants' LoRA adapters, served as "<model>:<adapter>" ---------------------------------

PROMPT = "The quick brown fox jumps"


@pytest.fixture(scope="module")
def adapter_dirs(tiny_checkpoint, tiny_checkpoint_4l, tmp_path_factory):
    from ossfleet.tinymodel import make_tiny_adapter

    root = tmp_path_factory.mktemp("adapters")
    return {
        "support": make_tiny_adapter(tiny_checkpoint, root / "support", seed=11, alpha=2),
        "legal": _cli_adapter(tiny_checkpoint, root / "legal", "--seed", "12", "--rank", "8", "--alpha", "4"),
        "big": make_tiny_adapter(tiny_checkpoint_4l, root / "big", seed=13, alpha=2, base_name="openai/gpt-oss-120b"),
    }


def _cli_adapter(checkpoint, out, *args):
    """``ossfleet make-tiny-adapter``, the command a developer runs."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "ossfleet.cli", "make-tiny-adapter", str(checkpoint), str(out), *args]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def upload_adapter(platform, tenant, model, name, folder, config=None, weights=None):
    files = {
        "adapter_config": ("adapter_config.json", config or (folder / "adapter_config.json").read_bytes()),
        "adapter_model": ("adapter_model.safetensors", weights or (folder / "adapter_model.safetensors").read_bytes()),
    }
    h = {"Authorization": f"Bearer {platform.keys[tenant]}"}
    return httpx.post(platform.base_url + "/v1/adapters", data={"model": model, "name": name}, files=files,
                      headers=h, timeout=120)  # fmt: skip


def greedy_text(checkpoint, adapter=None, n=12):
    """What ``generate`` gives on the base model, or on the adapter merged into it by PEFT, as text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    ids = tok.encode(PROMPT, add_special_tokens=False)
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)[0, len(ids) :].tolist()
    return tok.decode(out, skip_special_tokens=True)


def listed_adapters(platform, tenant) -> set[str]:
    h = {"Authorization": f"Bearer {platform.keys[tenant]}"}
    return {a["id"] for a in httpx.get(platform.base_url + "/v1/adapters", headers=h).json()["data"]}


def stored_adapter_files(platform) -> list[str]:
    from pathlib import Path

    root = Path(platform.cfg.storage_url())
    return sorted(str(p.relative_to(root)) for p in root.glob("*/adapters/**/*") if p.is_file())


def test_adapter_requests_of_two_tenants_at_once_each_get_their_peft_merged_models_tokens(
    platform, adapter_dirs, tiny_checkpoint, tiny_checkpoint_4l
):
    from concurrent.futures import ThreadPoolExecutor

    for tenant, model, name in (("acme", "gpt-oss-20b", "support"), ("globex", "gpt-oss-20b", "legal"),
                                ("acme", "gpt-oss-120b", "big")):  # fmt: skip
        r = upload_adapter(platform, tenant, model, name, adapter_dirs[name])
        assert r.status_code == 200, r.text
        assert r.json()["id"] == f"{model}:{name}" and r.json()["owned_by"] == tenant
    expected = {
        ("acme", "gpt-oss-20b:support"): greedy_text(tiny_checkpoint, adapter_dirs["support"]),
        ("globex", "gpt-oss-20b:legal"): greedy_text(tiny_checkpoint, adapter_dirs["legal"]),
        ("acme", "gpt-oss-20b"): greedy_text(tiny_checkpoint),
        # The two-stage pipeline: each stage applies its own layers' adapter weights.
        ("acme", "gpt-oss-120b:big"): greedy_text(tiny_checkpoint_4l, adapter_dirs["big"]),
    }
    assert len({expected[k] for k in expected if k[1].startswith("gpt-oss-20b")}) == 3  # adapters change tokens

    def complete(key):
        tenant, model = key
        c = openai.OpenAI(base_url=platform.base_url + "/v1", api_key=platform.keys[tenant], max_retries=0)
        return c.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)

    # Twice each, all at once: both tenants' adapters and the base model share the replica's steps.
    keys = list(expected) * 2
    with ThreadPoolExecutor(len(keys)) as pool:
        replies = list(pool.map(complete, keys))
    for key, reply in zip(keys, replies, strict=True):
        assert reply.model == key[1]
        assert reply.choices[0].text == expected[key], key


def test_adapters_are_invisible_to_other_tenants_and_bad_ones_are_refused_and_stored_nowhere(platform, adapter_dirs):
    acme = openai.OpenAI(base_url=platform.base_url + "/v1", api_key=platform.keys["acme"], max_retries=0)
    globex = openai.OpenAI(base_url=platform.base_url + "/v1", api_key=platform.keys["globex"], max_retries=0)
    assert upload_adapter(platform, "acme", "gpt-oss-20b", "support", adapter_dirs["support"]).status_code == 200
    assert "gpt-oss-20b:support" in [m.id for m in acme.models.list()]
    assert "gpt-oss-20b:support" not in [m.id for m in globex.models.list()]
    # To globex, acme's adapter does not exist: not usable, not readable, not deletable.
    with pytest.raises(openai.NotFoundError, match="no adapter 'support'"):
        globex.completions.create(model="gpt-oss-20b:support", prompt="x", max_tokens=2)
    h = {"Authorization": f"Bearer {platform.keys['globex']}"}
    for method in ("GET", "DELETE"):
        r = httpx.request(method, platform.base_url + "/v1/adapters/gpt-oss-20b:support", headers=h)
        assert r.status_code == 404, r.text
    assert acme.models.retrieve("gpt-oss-20b:support").owned_by == "acme"

    before = stored_adapter_files(platform)
    listed = listed_adapters(platform, "acme")
    cfg = json.loads((adapter_dirs["support"] / "adapter_config.json").read_text())
    bad = [
        # (model, name, config, folder, status, param, reason)
        ("gpt-oss-20b", "dora", {**cfg, "use_dora": True}, "support", 400, "adapter_config.json", "DoRA"),
        ("gpt-oss-20b", "wrong-base", None, "big", 400, "adapter_config.json", "trained on 'openai/gpt-oss-120b'"),
        ("gpt-oss-20b", "wrong-rank", {**cfg, "r": 8}, "support", 400, "adapter_model.safetensors", "expected"),
        ("gpt-oss-7b", "nope", None, "support", 404, "model", "does not exist"),
        ("gpt-oss-20b", "Bad Name!", None, "support", 400, "name", "adapter name"),
    ]
    for model, name, config, folder, status, param, reason in bad:
        body = json.dumps(config).encode() if config is not None else None
        r = upload_adapter(platform, "acme", model, name, adapter_dirs[folder], config=body)
        assert r.status_code == status, (name, r.text)
        assert r.json()["error"]["param"] == param and reason in r.json()["error"]["message"], (name, r.json())
    assert stored_adapter_files(platform) == before
    assert listed_adapters(platform, "acme") == listed
    # A model name with an adapter the caller does not have, on the base's own terms.
    with pytest.raises(openai.NotFoundError, match="upload one with POST /v1/adapters"):
        acme.chat.completions.create(model="gpt-oss-20b:missing", messages=USER, max_tokens=2)


def test_grpc_adapter_upload_generate_usage_and_delete(platform, adapter_dirs):
    import grpc

    from ossfleet.client import OssfleetClient

    with OssfleetClient(platform.grpc_target, platform.keys["globex"]) as c:
        a = c.upload_adapter("gpt-oss-20b", "grpc-bot", adapter_dirs["legal"])
        assert a.id == "gpt-oss-20b:grpc-bot" and a.rank == 8 and list(a.target_modules) == [
            "q_proj", "k_proj", "v_proj", "o_proj"]  # fmt: skip
        assert "gpt-oss-20b:grpc-bot" in [x.id for x in c.list_adapters()]
        assert "gpt-oss-20b:grpc-bot" in c.list_models()
        before = {m.model: m.requests for m in c.usage().models}
        reply = c.generate("gpt-oss-20b:grpc-bot", [("user", "Hi")], max_tokens=8, timeout=120)
        assert reply.usage.output_tokens >= 1
        after = {m.model: m.requests for m in c.usage().models}
        assert after["gpt-oss-20b:grpc-bot"] == before.get("gpt-oss-20b:grpc-bot", 0) + 1  # usage per adapter
        assert c.delete_adapter("gpt-oss-20b:grpc-bot").deleted
        assert "gpt-oss-20b:grpc-bot" not in [x.id for x in c.list_adapters()]
        with pytest.raises(grpc.RpcError) as e:
            c.generate("gpt-oss-20b:grpc-bot", [("user", "Hi")], max_tokens=8, timeout=60)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert not [f for f in stored_adapter_files(platform) if "grpc-bot" in f]  # its files went with it


def test_adapter_lines_of_a_queue_batch_job_run_on_the_adapter(platform, adapter_dirs, tiny_checkpoint):
    import io

    from e2e_platform import wait_for_batch

    acme = openai.OpenAI(base_url=platform.base_url + "/v1", api_key=platform.keys["acme"], max_retries=0)
    assert upload_adapter(platform, "acme", "gpt-oss-20b", "support", adapter_dirs["support"]).status_code == 200
    lines = [{"custom_id": f"l{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": model, "prompt": PROMPT, "max_tokens": 12, "temperature": 0}}
             for i, model in enumerate(["gpt-oss-20b:support", "gpt-oss-20b", "gpt-oss-20b:missing"])]  # fmt: skip
    f = acme.files.create(file=("a.jsonl", io.BytesIO("\n".join(json.dumps(x) for x in lines).encode())),
                          purpose="batch")  # fmt: skip
    b = acme.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
    b = wait_for_batch(acme, b.id)
    assert b.status == "completed", b
    out = {x["custom_id"]: x for x in map(json.loads, acme.files.content(b.output_file_id).read().splitlines())}
    errs = {x["custom_id"]: x for x in map(json.loads, acme.files.content(b.error_file_id).read().splitlines())}
    assert out["l0"]["response"]["body"]["choices"][0]["text"] == greedy_text(tiny_checkpoint, adapter_dirs["support"])
    assert out["l0"]["response"]["body"]["model"] == "gpt-oss-20b:support"
    assert out["l1"]["response"]["body"]["choices"][0]["text"] == greedy_text(tiny_checkpoint)
    assert "l2" in errs and "missing" in json.dumps(errs["l2"])
