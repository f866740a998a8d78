"""The OpenAI Batch JSONL format: every bad line reported with its number, output lines as OpenAI's."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ossfleet.batch.format import error_line, iter_lines, output_line, parse_prepared, validate


def line(cid="a", method="POST", url="/v1/chat/completions", body=None, **extra) -> bytes:
    d = {"custom_id": cid, "method": method, "url": url, "body": body if body is not None else {"model": "m"}, **extra}
    return json.dumps(d).encode()


def ok(_body):
    return None


def test_every_bad_line_is_reported_with_its_number():
    raw = [
        line("a"),
        b"{oops",
        line("b", method="GET"),
        line("c", url="/v1/embeddings"),
        b"\xff\xfe",
        line("a"),  # repeats line 1
        b"[1, 2]",
        line("", body={}),
        line("d", extra_field=1),
        line("e", body={"model": "m", "stream": True}),
        b"",
        line("f"),
    ]
    v = validate(raw, "/v1/chat/completions", ok, max_lines=100)
    assert [e.line for e in v.errors] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    msgs = {e.line: e.message for e in v.errors}
    assert "JSON" in msgs[2] and "POST" in msgs[3] and "/v1/embeddings" in msgs[4] and "UTF-8" in msgs[5]
    assert "repeats line 1" in msgs[6] and "object" in msgs[7] and "custom_id" in msgs[8]
    assert "extra_field" in msgs[9] and "stream" in msgs[10]
    assert [(x.custom_id, x.line) for x in v.lines] == [("a", 1), ("f", 12)]


def test_the_body_check_speaks_for_the_endpoint():
    v = validate([line("a", body={"model": "x"})], "/v1/chat/completions", lambda b: "max_tokens: too big", max_lines=9)
    assert [str(e) for e in v.errors] == ["line 1: body: max_tokens: too big"]


def test_an_empty_file_and_too_many_lines_are_refused():
    assert (
        validate([b"", b"  "], "/v1/chat/completions", ok, max_lines=9).errors[0].message
        == "the file holds no requests"
    )
    v = validate([line(str(i)) for i in range(5)], "/v1/chat/completions", ok, max_lines=3)
    assert v.errors[-1].line == 4 and "more than 3" in v.errors[-1].message


@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=30, unique=True))
def test_prepared_lines_round_trip_and_keep_their_position(ids):
    raw = b"\n".join(line(c, body={"model": "m", "messages": [{"role": "user", "content": c}]}) for c in ids)
    v = validate(iter_lines(raw), "/v1/chat/completions", ok, max_lines=100)
    assert v.errors == []
    back = [parse_prepared(x.prepared()) for x in v.lines]
    assert [(b.custom_id, b.index) for b in back] == [(c, i) for i, c in enumerate(ids)]


def test_output_and_error_lines_have_openais_shape():
    o = json.loads(output_line("a", "rid", {"choices": []}))
    assert o["custom_id"] == "a" and o["error"] is None and o["id"].startswith("batch_req_")
    assert o["response"] == {"status_code": 200, "request_id": "rid", "body": {"choices": []}}
    e = json.loads(error_line("b", "batch_expired", "the batch expired"))
    assert e["response"] is None and e["error"] == {"code": "batch_expired", "message": "the batch expired"}
    f = json.loads(error_line("c", "context_length_exceeded", "too long", status_code=400, request_id="r"))
    assert f["response"]["status_code"] == 400 and f["response"]["body"]["error"]["code"] == "context_length_exceeded"
