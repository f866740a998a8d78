"""Hardening, pure parts: every malformed input is a typed refusal naming the field, never a crash."""

from __future__ import annotations

import json
import logging

import pytest
import redis.exceptions
from pydantic import ValidationError

from ossfleet import jsonlimits
from ossfleet.batch.format import validate
from ossfleet.config import LimitsConfig
from ossfleet.errors import InternalError, InvalidRequest, Unavailable, from_unexpected
from ossfleet.harmony import Message, Tool
from ossfleet.protocol.chat import ChatRequest, check_request
from ossfleet.protocol.openai import batch_request

MALFORMED_SCHEMAS = [{"properties": [1]}, {"type": 5}, {"required": "x"}, {"minimum": "zero"}]
INVALID_STRINGS = ["a\ud800b", "\udfff", "ok \ud83d"]


def chat(**kw) -> ChatRequest:
    return ChatRequest(**({"model": "gpt-oss-20b", "messages": (Message("user", "hi"),), "max_tokens": 8} | kw))


@pytest.mark.parametrize("schema", MALFORMED_SCHEMAS, ids=[json.dumps(s) for s in MALFORMED_SCHEMAS])
def test_hardening_a_malformed_tool_schema_is_refused_naming_the_tool(schema):
    with pytest.raises(InvalidRequest, match=r"tools\[1\]\.function\.parameters is not a valid JSON Schema") as e:
        check_request(chat(tools=(Tool("ok", "", {"type": "object"}), Tool("bad", "", schema))))
    assert e.value.param == "tools[1].function.parameters"


def test_hardening_a_valid_tool_schema_passes():
    check_request(chat(tools=(Tool("f", "", {"type": "object", "properties": {"a": {"type": "integer"}}}),)))


@pytest.mark.parametrize("text", INVALID_STRINGS, ids=["inner", "alone", "trailing"])
def test_hardening_invalid_unicode_is_refused_naming_the_field(text):
    with pytest.raises(InvalidRequest, match=r"messages\[1\]\.content is not valid Unicode"):
        check_request(chat(messages=(Message("system", "fine"), Message("user", text))))
    with pytest.raises(InvalidRequest, match="prompt is not valid Unicode"):
        check_request(chat(messages=(), prompt=text))
    with pytest.raises(InvalidRequest, match=r"stop\[0\]"):
        check_request(chat(stop=(text,)))


def test_hardening_json_nested_too_deep_or_with_a_huge_number_is_a_clear_refusal():
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        jsonlimits.loads(deep)
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        jsonlimits.loads("[" * 80 + "]" * 80)  # below the recursion limit, above ours
    with pytest.raises(InvalidRequest, match="number too large"):
        jsonlimits.loads('{"max_tokens": 1' + "0" * 5000 + "}")
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        jsonlimits.loads("{nope")
    assert jsonlimits.loads('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}


def test_hardening_a_batch_line_is_checked_like_a_live_request():
    lim = LimitsConfig()
    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": [1]}}}]}  # fmt: skip
    with pytest.raises(InvalidRequest, match="not a valid JSON Schema"):
        batch_request("/v1/chat/completions", body, lim)
    with pytest.raises(InvalidRequest, match="prompt is not valid Unicode"):
        batch_request("/v1/completions", {"model": "gpt-oss-20b", "prompt": "a\ud800"}, lim)
    with pytest.raises(InvalidRequest, match="seed"):
        batch_request("/v1/completions", {"model": "gpt-oss-20b", "prompt": "a", "seed": 2**70}, lim)


def test_hardening_batch_validation_numbers_deep_and_huge_lines_instead_of_failing():
    def check(body):
        return None

    good = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}})
    deep = '{"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": ' + "[" * 3000 + "]" * 3000 + "}"
    huge = '{"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"n": 1' + "0" * 5000 + "}}"
    v = validate([good.encode(), deep.encode(), huge.encode()], "/v1/completions", check, max_lines=10)
    assert [x.custom_id for x in v.lines] == ["a"]
    assert [(e.line, e.message.split(" (")[0]) for e in v.errors] == [
        (2, "nested too deeply"),
        (3, "has a number too large to read"),
    ]


def test_hardening_unexpected_errors_become_503_for_redis_and_500_with_an_id_otherwise(caplog):
    log = logging.getLogger("test")
    for e in (redis.exceptions.ConnectionError("down"), redis.exceptions.TimeoutError("slow"), TimeoutError()):
        err = from_unexpected(e, log, "here")
        assert isinstance(err, Unavailable) and err.http_status == 503 and err.headers()["retry-after"]
    with caplog.at_level(logging.ERROR):
        try:
            raise ValueError("/secret/path.py pid 1234")
        except ValueError as e:
            err = from_unexpected(e, log, "here")
    assert isinstance(err, InternalError) and err.http_status == 500 and err.grpc_code == "INTERNAL"
    assert "secret" not in err.message and err.details["error_id"] in err.message
    assert err.details["error_id"] in caplog.text and "Traceback" in caplog.text  # the log has it all


def test_hardening_dedicated_resources_lacking_are_named_with_what_is_free():
    from ossfleet.batch.dedicated import missing_resources

    need = {"CPU": 0.5, "GPU": 1.0}
    assert missing_resources(need, {"CPU": 2.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 3.0}) is None
    assert missing_resources(need, {"CPU": 0.25}, {"CPU": 2.0, "GPU": 3.0}) == (
        "0.5 CPU (free 0.25 of 2), 1 GPU (free 0 of 3)"
    )
    # A resource the actor does not ask for is never the reason.
    assert missing_resources({"CPU": 0.5, "GPU": 0.0}, {"CPU": 1.0}, {"CPU": 1.0}) is None


def test_hardening_completions_take_token_id_prompts_and_refuse_stream_options_without_a_stream():
    """#33 finding 11: OpenAI accepts an int array or int arrays as a prompt, and refuses stream_options
    on a request that does not stream."""
    from ossfleet.protocol.chat import RequestMeta
    from ossfleet.protocol.openai import CompletionRequest, to_completion_request

    def texts(prompt):
        return CompletionRequest.model_validate({"model": "m", "prompt": prompt}).texts()

    assert texts([0, 0, 0]) == [(0, 0, 0)]
    assert texts([[1, 2, 3], [4, 5]]) == [(1, 2, 3), (4, 5)]
    assert texts(["a", "b"]) == ["a", "b"] and texts("a") == ["a"]
    req = to_completion_request(
        CompletionRequest.model_validate({"model": "m", "prompt": [[1, 2], [3]]}), RequestMeta(), 64
    )
    assert (req.prompt, req.more_prompts) == ((1, 2), ((3,),))
    for bad in ([-1], [[]], [1.5], [], [[1], "a"]):
        with pytest.raises(ValidationError):
            CompletionRequest.model_validate({"model": "m", "prompt": bad})
    usage = {"include_usage": True}
    for body in ({"model": "m", "prompt": "x", "stream_options": usage},
                 {"model": "m", "prompt": "x", "stream": False, "stream_options": usage}):  # fmt: skip
        with pytest.raises(ValidationError, match="stream_options is only allowed when stream is true"):
            CompletionRequest.model_validate(body)
    CompletionRequest.model_validate({"model": "m", "prompt": "x", "stream": True, "stream_options": {}})


def test_hardening_token_ids_past_the_vocabulary_are_refused_naming_the_prompt(tiny_checkpoint):
    from transformers import AutoTokenizer

    from ossfleet.harmony import raw_prompt_ids

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert raw_prompt_ids(tok, (1, 2, len(tok) - 1)) == [1, 2, len(tok) - 1]
    with pytest.raises(InvalidRequest, match=f"token id {len(tok)} is outside the model's vocabulary") as e:
        raw_prompt_ids(tok, (1, len(tok)))
    assert e.value.param == "prompt"


def test_hardening_completions_logprobs_keep_the_sampled_token_and_never_collapse_partial_characters():
    """#33 finding 11: top_logprobs keyed by decoded text collapsed distinct partial-UTF-8 tokens into one
    "\ufffd" key, and left the sampled token out (logprobs: 0 gave {})."""
    from ossfleet.protocol.openai import completion_logprobs

    def entry(b, lp, top=()):
        return {"token": bytes(b).decode("utf-8", errors="replace"), "logprob": lp, "bytes": list(b),
                "top_logprobs": [{"token": bytes(t).decode("utf-8", errors="replace"), "logprob": v, "bytes": list(t)}
                                 for t, v in top]}  # fmt: skip

    out = completion_logprobs([
        entry(b"\xe2", -1.0, [(b"\xe2\x80", -0.5), (b"\xe2", -1.0), (b"\x80", -2.0), (b"hi", -3.0)]),
        entry(b"ok", -0.1),
    ])  # fmt: skip
    assert out["tokens"] == ["bytes:\\xe2", "ok"]
    assert out["top_logprobs"][0] == {"bytes:\\xe2": -1.0, "bytes:\\xe2\\x80": -0.5, "bytes:\\x80": -2.0, "hi": -3.0}
    assert out["top_logprobs"][1] == {"ok": -0.1}  # logprobs: 0 still names the sampled token


@pytest.mark.parametrize(
    ("answer", "finish"),
    [
        ("<|channel|>final<|message|>hello<|call|>", "stop"),  # a plain message ended with <|call|>
        ("<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}<|call|>", "tool_calls"),
        ("<|channel|>final<|message|>hello<|return|>", "stop"),
    ],
)
async def test_hardening_tool_calls_is_the_finish_reason_only_where_a_call_was_parsed(tiny_checkpoint, answer, finish):
    """#33 finding 11: a plain message the model ended with <|call|> was reported as "tool_calls"."""
    from transformers import AutoTokenizer

    from ossfleet.engine.base import TokenOutput
    from ossfleet.protocol.work import WorkItem
    from ossfleet.replica.generation import Generation

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    ids = tok.encode(answer, add_special_tokens=False)

    class Replay:  # an engine that answers with fixed tokens: the finish rule is pure logic over them
        async def generate(self, request):
            yield TokenOutput(ids, finished=True, finish_reason="stop")

        def abort(self, request_id):
            pass

    gen = Generation(tok, "r", WorkItem([1, 2], 64))
    events = [e async for batch in gen.run(Replay()) for e in batch]
    assert gen.finish == finish
    assert any(e.delta.kind == "tool_call" for e in events) == (finish == "tool_calls")


def test_hardening_names_with_a_trailing_newline_are_refused():
    """#33 finding 9: Python's re "$" matches before a trailing newline, so "bot\\n" passed as a name."""
    from ossfleet.adapters.store import check_name

    check_name("bot")
    for bad in ("bot\n", "bot\r\n", "\nbot", "Bot", ""):
        with pytest.raises(InvalidRequest, match="adapter name"):
            check_name(bad)


def test_hardening_tool_schemas_past_their_bound_are_refused_before_the_meta_schema_check():
    """#33 finding 4: a 780 KB tool schema took 4.5 s of the gateway's event loop to check."""
    from ossfleet.protocol.chat import MAX_TOOL_SCHEMA_BYTES

    def req(properties: int, tools: int = 1) -> ChatRequest:
        schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(properties)}}
        return ChatRequest(model="m", messages=(Message("user", "hi"),), max_tokens=4,
                           tools=tuple(Tool(f"t{j}", "", schema) for j in range(tools)))  # fmt: skip

    check_request(req(100, tools=3))
    with pytest.raises(InvalidRequest, match=f"more than {MAX_TOOL_SCHEMA_BYTES} bytes") as e:
        check_request(req(20_000))
    assert e.value.param == "tools[0].function.parameters"
    with pytest.raises(InvalidRequest) as e:  # the bound is over all of a request's tools together
        check_request(req(1_000, tools=3))
    assert e.value.param == "tools[2].function.parameters"


@pytest.mark.parametrize(
    "raw", ["[" * 100_000 + "]" * 100_000, '{"a": ' + "9" * 5000 + "}", '{"a": ' + "[" * 70 + "]" * 70 + "}"]
)
def test_hardening_grpc_json_fields_are_invalid_argument_where_http_gives_400(raw):
    """#33 finding 8: gRPC JSON fields nested 100k deep or with 5,000-digit numbers were INTERNAL."""
    from ossfleet.api.grpc_admin import _fields
    from ossfleet.api.grpc_inference import to_chat
    from ossfleet.v1 import ossfleet_pb2 as pb

    def request(**kw):
        return pb.GenerateRequest(model="m", messages=[pb.Message(role="user", content="hi")], max_tokens=4, **kw)

    cases = [
        (lambda: to_chat(request(tools=[pb.Tool(name="f", parameters_json=raw)]), {}, 64, 8), "tools"),
        (lambda: to_chat(request(response_format=pb.ResponseFormat(type="json_schema", schema_json=raw)), {}, 64, 8),
         "response_format"),
        (lambda: _fields(raw), "fields_json"),
    ]  # fmt: skip
    for call, param in cases:
        with pytest.raises(InvalidRequest) as e:  # INVALID_ARGUMENT on gRPC (errors.py maps it)
            call()
        assert e.value.param == param
