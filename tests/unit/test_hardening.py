"""Hardening, pure parts: every malformed input is a typed refusal naming the field, never a crash."""

from __future__ import annotations

import json
import logging

import pytest
import redis.exceptions

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
