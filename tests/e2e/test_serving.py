"""One real request through the whole path: HTTP -> Gateway -> Redis -> replica -> engine -> stream -> client."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from ossfleet.control.budget import period_id
from ossfleet.control.keyspace import KeySpace
from ossfleet.harmony import HarmonyRenderer, Message
from ossfleet.redisdb import connect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(platform):
    return openai.OpenAI(base_url=platform.base_url + "/v1", api_key=platform.keys["acme"], max_retries=0)


def queue_keys(platform) -> set[bytes]:
    """Every queue-state key (request records, lanes, waits, budgets) of the platform's namespace."""
    r = connect(platform.redis_url)
    ks = KeySpace(platform.cfg.redis.namespace)
    # Not the tenant registry (seeded from the config on the first request a gateway serves) nor API keys.
    other = tuple(
        (ks.prefix + f).encode() for f in ("apikey:", "tenant:", "tenants", "tenantseed", "tenantkeys:", "audit")
    )
    keys = {k for pattern in ks.patterns() for k in r.scan_iter(match=pattern) if not k.startswith(other)}
    r.close()
    return keys


def test_replicas_hold_logical_gpus(platform, ray_cluster):
    # The 20B replica takes one GPU, the 120B pipeline group two: all three logical GPUs.
    assert ray_cluster.cluster_resources()["GPU"] == 3
    assert ray_cluster.available_resources().get("GPU", 0) == 0


def test_120b_pipeline_stages_sit_on_different_nodes(platform, client):
    from ray.util.state import list_actors

    resp = client.chat.completions.create(
        model="gpt-oss-120b", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0
    )
    assert resp.model == "gpt-oss-120b" and resp.usage.completion_tokens == 6
    import ray

    stages = list_actors(
        address=ray.get_runtime_context().gcs_address,
        filters=[("class_name", "=", "PipelineStage"), ("state", "=", "ALIVE")],
    )
    assert len(stages) == 2
    assert len({a.node_id for a in stages}) == 2


def test_openai_client_chat_plain_returns_the_tiny_models_greedy_tokens(platform, client, tiny_checkpoint):
    resp = client.chat.completions.create(
        model="gpt-oss-20b", messages=[{"role": "user", "content": "Hello there"}], max_tokens=12, temperature=0
    )
    assert resp.model == "gpt-oss-20b"
    assert resp.choices[0].finish_reason in ("length", "stop")
    assert resp.usage.completion_tokens == 12
    # The same prompt through the same checkpoint in this process gives the same text.
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    prompt = HarmonyRenderer(tok).render([Message("user", "Hello there")])
    assert resp.usage.prompt_tokens == len(prompt)
    out = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0][len(prompt) :]
    assert resp.choices[0].message.content == tok.decode(out, skip_special_tokens=False)


def test_ignore_eos_and_min_tokens_reach_the_engine_over_both_apis(platform, client, grpc_client):
    # The tiny random model meets a stop token within tens of tokens; ignore_eos runs to max_tokens.
    resp = client.completions.create(
        model="gpt-oss-20b", prompt="Once", max_tokens=240, temperature=0, extra_body={"ignore_eos": True}
    )
    assert resp.usage.completion_tokens == 240 and resp.choices[0].finish_reason == "length"
    resp = client.chat.completions.create(
        model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}], max_tokens=200, temperature=0,
        extra_body={"min_tokens": 150},
    )  # fmt: skip
    assert resp.usage.completion_tokens >= 150
    reply = grpc_client.generate("gpt-oss-20b", [("user", "Hi")], max_tokens=220, temperature=0, ignore_eos=True,
                                 timeout=120)  # fmt: skip
    assert reply.usage.output_tokens == 220
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="gpt-oss-20b", prompt="x", max_tokens=4, extra_body={"min_tokens": -1})


def test_openai_client_chat_streamed(platform, client):
    stream = client.chat.completions.create(
        model="gpt-oss-120b",
        messages=[{"role": "user", "content": "Stream please"}],
        max_tokens=10,
        temperature=0,  # greedy: the tiny model's sampled text may hit a stop token early
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.model == "gpt-oss-120b" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text and finish == ["length"]
    assert chunks[-1].usage.completion_tokens == 10


def test_models_endpoint_lists_configured_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["gpt-oss-20b", "gpt-oss-120b", "auto"]


def test_models_endpoint_retrieves_one_model_and_404s_an_unknown_one(client):
    assert client.models.retrieve("gpt-oss-120b").id == "gpt-oss-120b"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-5")
    assert e.value.body["code"] == "model_not_found"


def test_openai_fields_that_change_nothing_here_are_accepted_and_ignored(client):
    # What agent frameworks send by default; README lists them as accepted and ignored.
    reply = client.chat.completions.create(
        model="gpt-oss-20b", messages=[{"role": "user", "content": "x"}], max_tokens=4, temperature=0,
        metadata={"team": "eval"}, store=False, parallel_tool_calls=True, service_tier="auto", user="u-1",
        prompt_cache_key="k", safety_identifier="s",
    )  # fmt: skip
    assert reply.usage.completion_tokens == 4 and reply.choices[0].finish_reason == "length"


def test_served_request_is_charged_to_the_tenant(platform, client):
    r = connect(platform.redis_url)
    key = KeySpace(platform.cfg.redis.namespace).budget("acme", period_id("monthly"))
    before = {k: int(v) for k, v in r.hgetall(key).items()}
    client.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "x"}], max_tokens=4)
    after = {k: int(v) for k, v in r.hgetall(key).items()}
    assert after[b"reserved"] == 0
    assert after[b"spent"] > before.get(b"spent", 0)


BAD = [
    # (description, headers, body, expected status, expected code)
    ("unknown model", {}, {"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
    ("missing key", {"authorization": ""}, {"model": "gpt-oss-20b"}, 401, "invalid_api_key"),
    ("wrong key", {"authorization": "Bearer osf-wrong"}, {"model": "gpt-oss-20b"}, 401, "invalid_api_key"),
    ("empty messages", {}, {"model": "gpt-oss-20b", "messages": []}, 400, "invalid_request"),
    (
        "absurd max_tokens",
        {},
        {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**9},
        400,
        "invalid_request",
    ),
    (
        "negative max_tokens",
        {},
        {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
        400,
        "invalid_request",
    ),
    (
        "unknown field",
        {},
        {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}], "bogus": 1},
        400,
        "invalid_request",
    ),
    ("wrong type", {}, {"model": "gpt-oss-20b", "messages": "hello"}, 400, "invalid_request"),
    (
        "bad role",
        {},
        {"model": "gpt-oss-20b", "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "invalid_request",
    ),
    (
        "model not allowed for tenant",
        {"tenant": "globex"},
        {"model": "gpt-oss-120b", "messages": [{"role": "user", "content": "x"}]},
        404,
        "model_not_found",
    ),
    (
        "unknown priority band",
        {"x-ossfleet-priority": "vip"},
        {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}]},
        400,
        "invalid_request",
    ),
    (
        "openai field ossfleet cannot honour",
        {},
        {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}], "modalities": ["audio"]},
        400,
        "invalid_request",
    ),
    (
        "priority above tenant's band",
        {"tenant": "globex", "x-ossfleet-priority": "interactive"},
        {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}]},
        403,
        "permission_denied",
    ),
]


@pytest.mark.parametrize(("what", "headers", "body", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_error_and_leaves_nothing_in_redis(platform, what, headers, body, status, code):
    before = queue_keys(platform)
    h = dict(headers)
    tenant = h.pop("tenant", "acme")
    h.setdefault("authorization", f"Bearer {platform.keys[tenant]}")
    resp = httpx.post(platform.base_url + "/v1/chat/completions", json=body, headers=h, timeout=30)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["message"]
    assert queue_keys(platform) == before


@pytest.mark.parametrize(
    ("raw", "status"),
    [(b"{not json", 400), (b"\xff\xfe\x00garbage", 400), (b"[1, 2]", 400), (b"x" * 70000, 413)],
    ids=["malformed json", "invalid utf-8", "not an object", "too large"],
)
def test_garbage_bodies_are_refused(platform, raw, status):
    before = queue_keys(platform)
    resp = httpx.post(
        platform.base_url + "/v1/chat/completions",
        content=raw,
        headers={"authorization": f"Bearer {platform.keys['acme']}", "content-type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["message"]
    assert queue_keys(platform) == before
    # And the server is still up.
    assert httpx.get(platform.base_url + "/health", timeout=10).status_code == 200


def test_context_overflow_is_refused_before_any_compute(platform):
    long = "word " * 2000
    resp = httpx.post(
        platform.base_url + "/v1/chat/completions",
        json={"model": "gpt-oss-20b", "messages": [{"role": "user", "content": long}], "max_tokens": 10},
        headers={"authorization": f"Bearer {platform.keys['acme']}"},
        timeout=30,
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "context_length_exceeded"


# -- gRPC ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpc_client(platform):
    from ossfleet.client import OssfleetClient

    with OssfleetClient(platform.grpc_target, platform.keys["acme"]) as c:
        yield c


def test_grpc_unary_generate(grpc_client):
    reply = grpc_client.generate("gpt-oss-20b", [("user", "Hello there")], max_tokens=8, temperature=0, timeout=60)
    assert reply.model == "gpt-oss-20b" and reply.request_id
    assert reply.content and reply.usage.output_tokens == 8 and reply.usage.cost_usd > 0


def test_grpc_stream_then_resume_from_a_cursor_loses_and_repeats_nothing(grpc_client):
    chunks = list(grpc_client.stream("gpt-oss-120b", [("user", "Stream")], max_tokens=12, temperature=0, timeout=60))
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage.output_tokens == 12
    full = "".join(c.content for c in chunks)
    assert full and len({c.request_id for c in chunks}) == 1
    # A second client reads half a stream and drops it; ResumeStream gives the rest.
    call = grpc_client.stream("gpt-oss-20b", [("user", "Again")], max_tokens=12, temperature=0, timeout=60)
    first = []
    for chunk in call:
        first.append(chunk)
        if len(first) == 3:
            break
    call.cancel()
    rest = list(grpc_client.resume(first[-1].request_id, first[-1].cursor, timeout=60))
    cursors = [c.cursor for c in first + rest]
    assert len(cursors) == len(set(cursors))  # nothing repeated
    whole = list(grpc_client.resume(first[-1].request_id, "", timeout=60))
    assert [c.cursor for c in whole] == cursors  # nothing lost
    assert rest[-1].finish_reason == "length"


def test_grpc_cancel_stops_a_running_request_and_refunds(grpc_client, platform):
    import grpc

    call = grpc_client.stream("gpt-oss-20b", [("user", "Long")], max_tokens=250, temperature=0, timeout=60)
    first = next(call)
    assert grpc_client.cancel(first.request_id) in ("cancelling", "cancelled")
    last = list(call)[-1]
    assert last.finish_reason == "cancelled" and last.usage.output_tokens < 250
    with pytest.raises(grpc.RpcError) as e:
        grpc_client.cancel("no-such-request")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_list_models_and_usage(grpc_client):
    assert grpc_client.list_models() == ["gpt-oss-20b", "gpt-oss-120b", "auto"]
    usage = grpc_client.usage()
    assert usage.tenant == "acme" and usage.spent_usd > 0 and usage.budget_usd == 100
    assert usage.budget_left_usd <= 100 - usage.spent_usd + 1e-9
    assert {m.model for m in usage.models} >= {"gpt-oss-20b"}


def test_grpc_reflection_lists_the_service(platform):
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(platform.grpc_target) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = [s.name for r in responses for s in r.list_services_response.service]
    assert "ossfleet.v1.Ossfleet" in names


GRPC_BAD = [
    ("wrong key", {"key": "osf-wrong"}, {"model": "gpt-oss-20b", "messages": [("user", "x")]}, "UNAUTHENTICATED"),
    ("unknown model", {}, {"model": "gpt-9", "messages": [("user", "x")]}, "NOT_FOUND"),
    ("empty messages", {}, {"model": "gpt-oss-20b", "messages": []}, "INVALID_ARGUMENT"),
    ("bad role", {}, {"model": "gpt-oss-20b", "messages": [("wizard", "x")]}, "INVALID_ARGUMENT"),
    (
        "huge max_tokens",
        {},
        {"model": "gpt-oss-20b", "messages": [("user", "x")], "max_tokens": 10**6},
        "INVALID_ARGUMENT",
    ),
    (
        "bad tool schema",
        {},
        {"model": "gpt-oss-20b", "messages": [("user", "x")], "tools": [{"name": "f", "parameters_json": "{nope"}]},
        "INVALID_ARGUMENT",
    ),
]


@pytest.mark.parametrize(("what", "opts", "req", "code"), GRPC_BAD, ids=[b[0] for b in GRPC_BAD])
def test_grpc_bad_input_gets_the_right_status_and_leaves_nothing(platform, what, opts, req, code):
    import grpc

    from ossfleet.client import OssfleetClient
    from ossfleet.v1 import ossfleet_pb2 as pb

    before = queue_keys(platform)
    kw = dict(req)
    if "tools" in kw:
        kw["tools"] = [pb.Tool(**t) for t in kw["tools"]]
    with OssfleetClient(platform.grpc_target, opts.get("key", platform.keys["acme"])) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.generate(kw.pop("model"), kw.pop("messages"), timeout=30, **kw)
        assert e.value.code().name == code and e.value.details()
        assert c.list_models() if "key" not in opts else True
    assert queue_keys(platform) == before


def test_grpc_garbage_bytes_are_refused_and_the_server_stays_up(platform, grpc_client):
    import grpc

    with grpc.insecure_channel(platform.grpc_target) as ch:
        call = ch.unary_unary("/ossfleet.v1.Ossfleet/Generate", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as e:
            call(b"\xff\x00garbage\x13", metadata=grpc_client.metadata, timeout=30)
        assert e.value.code() != grpc.StatusCode.OK
    assert grpc_client.list_models()


def test_grpc_resume_of_another_tenants_request_is_not_found(platform, grpc_client):
    import grpc

    from ossfleet.client import OssfleetClient

    reply = grpc_client.generate("gpt-oss-20b", [("user", "mine")], max_tokens=2, timeout=60)
    with OssfleetClient(platform.grpc_target, platform.keys["globex"]) as other:
        with pytest.raises(grpc.RpcError) as e:
            list(other.resume(reply.request_id, timeout=30))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:
            other.cancel(reply.request_id)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_stream_errors_carry_their_status(platform):
    import grpc

    from ossfleet.client import OssfleetClient

    with OssfleetClient(platform.grpc_target, "osf-wrong") as c:
        with pytest.raises(grpc.RpcError) as e:
            list(c.stream("gpt-oss-20b", [("user", "x")], timeout=30))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with OssfleetClient(platform.grpc_target, platform.keys["acme"]) as c:
        with pytest.raises(grpc.RpcError) as e:
            list(c.stream("gpt-oss-20b", [], timeout=30))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_pipeline_group_that_cannot_be_placed_says_why(platform, tiny_checkpoint_4l):
    """Four stages on a cluster whose three GPUs are all taken: deploy() reports Serve's reason."""
    from ray import serve

    from deployments.app import AppSpec, deploy, replica_options
    from deployments.replica import ModelReplica
    from ossfleet.config import parse_config

    data = platform.cfg.dump()
    big = {**data["models"][1], "name": "gpt-oss-120b-wide", "pipeline_stages": 4, "placement_strategy": "PACK"}
    cfg = parse_config({**data, "models": [big], "tenants": [], "source": None}, "<e2e>")
    # The app build_applications makes, but with a short graceful shutdown: a replica that never started
    # has nothing to drain, and Serve's teardown would otherwise wait for it.
    m = cfg.models[0]
    options = {**replica_options(m, cfg, platform.redis_url), "graceful_shutdown_timeout_s": 1}
    spec = AppSpec(
        f"model-{m.name}", ModelReplica.options(**options).bind(cfg.dump(), m.name, platform.redis_url), None
    )
    reports: list[str] = []

    class Said(Exception):
        pass

    def report(reason: str) -> None:  # stop waiting once the reason is given (the event this test waits for)
        reports.append(reason)
        if "Resources required for each replica" in reason and "GPU" in reason:
            raise Said

    try:
        with pytest.raises(Said):
            deploy([spec], timeout_s=120, report=report, poll_s=0.5)
    finally:
        serve.delete(spec.name, _blocking=False)


# -- /v1/completions ----------------------------------------------------------------------------


def test_completions_continue_a_raw_prompt(platform, client, tiny_checkpoint):
    from transformers import AutoTokenizer

    resp = client.completions.create(model="gpt-oss-20b", prompt="The quick brown fox", max_tokens=8, temperature=0)
    assert resp.object == "text_completion" and resp.model == "gpt-oss-20b"
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    ids = tok.encode("The quick brown fox", add_special_tokens=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0][len(ids) :]
    assert resp.choices[0].text == tok.decode(out, skip_special_tokens=False)
    assert resp.usage.prompt_tokens == len(ids)
    chunks = list(
        client.completions.create(
            model="gpt-oss-20b", prompt="The quick brown fox", max_tokens=8, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == resp.choices[0].text
    assert chunks[-1].choices[0].finish_reason == resp.choices[0].finish_reason


def test_completions_bad_input(platform):
    before = queue_keys(platform)
    h = {"authorization": f"Bearer {platform.keys['acme']}"}
    for body in (
        {"model": "gpt-oss-20b", "prompt": ""},
        {"model": "gpt-oss-20b"},
        {"model": "gpt-oss-20b", "prompt": "x", "echo": True},
    ):
        resp = httpx.post(platform.base_url + "/v1/completions", json=body, headers=h, timeout=30)
        assert resp.status_code == 400 and resp.json()["error"]["message"]
    assert queue_keys(platform) == before


# -- HTTP semantics: idempotency, disconnects -----------------------------------------------------


def test_idempotency_key_returns_the_same_request_once(platform):
    h = {"authorization": f"Bearer {platform.keys['acme']}", "idempotency-key": "order-42"}
    body = {
        "model": "gpt-oss-20b",
        "messages": [{"role": "user", "content": "once"}],
        "max_tokens": 4,
        "temperature": 0,
    }
    a = httpx.post(platform.base_url + "/v1/chat/completions", json=body, headers=h, timeout=60)
    b = httpx.post(platform.base_url + "/v1/chat/completions", json=body, headers=h, timeout=60)
    assert a.status_code == b.status_code == 200
    assert a.json()["id"] == b.json()["id"] == "chatcmpl-" + a.headers["x-ossfleet-request-id"]
    assert a.json()["choices"][0]["message"]["content"] == b.json()["choices"][0]["message"]["content"]


def test_client_disconnect_cancels_the_stream_and_refunds(platform):
    r = connect(platform.redis_url)
    ks = KeySpace(platform.cfg.redis.namespace)
    h = {"authorization": f"Bearer {platform.keys['acme']}"}
    body = {
        "model": "gpt-oss-20b",
        "messages": [{"role": "user", "content": "long"}],
        "max_tokens": 250,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", platform.base_url + "/v1/chat/completions", json=body, headers=h, timeout=60) as resp:
        rid = resp.headers["x-ossfleet-request-id"]
        next(resp.iter_lines())
    # The gateway notices the disconnect, cancels; the replica stops and settles what it generated: the
    # stream's terminal event says so (read as it comes, XREAD blocking).
    stream, after, end = ks.stream("gpt-oss-20b", rid), "0-0", None
    while end is None:
        reply = r.xread({stream: after}, block=30_000)
        assert reply, "the request's stream saw no event for 30 s"
        for entry_id, fields in reply[0][1]:
            after = entry_id
            if fields[b"type"] in (b"done", b"error"):
                end = fields
    assert end[b"type"] == b"done" and end[b"finish_reason"] == b"cancelled"
    assert int(end[b"output_tokens"]) < 250
    # Settled in the same step: the reservation given back.
    assert r.hmget(ks.resv("acme", rid), "reserved", "settled") == [b"0", b"1"]


# -- fuzzing and isolation ----------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "bogus", 3]), "content": _json}
)
_body = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"model": st.sampled_from(["gpt-oss-20b", "auto", "", "nope", 7]), "messages": st.lists(_message, max_size=3)},
        optional={
            "max_tokens": st.integers(-5, 6),
            "temperature": _json,
            "stream": st.booleans(),
            "stop": _json,
            "tools": _json,
            "reasoning_effort": _json,
            "extra": _json,
        },
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_body)
def test_http_fuzz_never_a_server_error(platform, body):
    h = {"authorization": f"Bearer {platform.keys['acme']}"}
    resp = httpx.post(platform.base_url + "/v1/chat/completions", json=body, headers=h, timeout=60)
    assert resp.status_code < 500, resp.text
    if resp.status_code != 200:
        assert resp.json()["error"]["message"]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    model=st.sampled_from(["gpt-oss-20b", "auto", "", "nope"]),
    msgs=st.lists(st.tuples(st.sampled_from(["user", "system", "tool", "x", ""]), st.text(max_size=30)), max_size=3),
    max_tokens=st.integers(0, 6),
    effort=st.sampled_from(["", "low", "high", "extreme"]),
    temperature=st.floats(-1, 3, allow_nan=False),
)
def test_grpc_fuzz_never_an_internal_error(grpc_client, model, msgs, max_tokens, effort, temperature):
    import grpc

    try:
        grpc_client.generate(
            model, msgs, max_tokens=max_tokens, reasoning_effort=effort, temperature=temperature, timeout=60
        )
    except grpc.RpcError as e:
        assert e.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), e.details()
        assert e.details()


def test_usage_is_the_callers_own(platform, grpc_client):
    from ossfleet.client import OssfleetClient

    grpc_client.generate("gpt-oss-20b", [("user", "acme spends")], max_tokens=2, timeout=60)
    with OssfleetClient(platform.grpc_target, platform.keys["globex"]) as other:
        usage = other.usage()
    assert usage.tenant == "globex"
    acme = grpc_client.usage()
    assert acme.spent_usd > 0 and usage.spent_usd < acme.spent_usd


# -- hardening: malformed input over both APIs -------------------------------------------------------

_MSG = '[{"role": "user", "content": "x"}]'
HARDENING_HTTP = [
    ("malformed tool schema", "/v1/chat/completions",
     '{"model": "gpt-oss-20b", "messages": ' + _MSG + ', "tools": [{"type": "function", "function": '
     '{"name": "f", "parameters": {"properties": [1]}}}]}', "tools[0].function.parameters"),
    ("tool schema of the wrong type", "/v1/chat/completions",
     '{"model": "gpt-oss-20b", "messages": ' + _MSG + ', "tools": [{"type": "function", "function": '
     '{"name": "f", "parameters": {"type": 5}}}]}', "tools[0].function.parameters"),
    ("lone surrogate in content", "/v1/chat/completions",
     '{"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "a\\ud800b"}]}', "messages[0].content"),
    ("lone surrogate in a prompt", "/v1/completions", '{"model": "gpt-oss-20b", "prompt": "\\udfff"}', "prompt"),
    ("nested too deep", "/v1/chat/completions",
     '{"model": "gpt-oss-20b", "messages": ' + _MSG + ', "stop": ' + "[" * 5000 + "]" * 5000 + "}", "nested too"),
    ("a 5,000-digit number", "/v1/chat/completions",
     '{"model": "gpt-oss-20b", "messages": ' + _MSG + ', "max_tokens": 1' + "0" * 5000 + "}", "number too large"),
    ("seed past int64", "/v1/chat/completions",
     '{"model": "gpt-oss-20b", "messages": ' + _MSG + ', "seed": ' + str(2**70) + "}", "seed"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "path", "raw", "names"), HARDENING_HTTP, ids=[h[0] for h in HARDENING_HTTP])
def test_hardening_http_malformed_input_is_a_400_naming_the_problem(platform, what, path, raw, names):
    before = queue_keys(platform)
    h = {"authorization": f"Bearer {platform.keys['acme']}", "content-type": "application/json"}
    r = httpx.post(platform.base_url + path, content=raw.encode(), headers=h, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert names in err["message"] and "Traceback" not in r.text
    assert queue_keys(platform) == before
    assert httpx.get(platform.base_url + "/v1/models", headers=h, timeout=30).status_code == 200


def test_hardening_grpc_malformed_schema_and_oversized_requests_are_invalid_argument(platform, grpc_client):
    import grpc

    from ossfleet.v1 import ossfleet_pb2 as pb

    before = queue_keys(platform)
    cases = [
        ({"tools": [pb.Tool(name="f", parameters_json='{"properties": [1]}')]}, "tools[0].function.parameters"),
        ({"max_tokens": 4, "seed": 2**62, "stop": ["x" * 70_000]}, "limits.max_request_bytes"),
    ]
    for kw, names in cases:
        with pytest.raises(grpc.RpcError) as e:
            grpc_client.generate("gpt-oss-20b", [("user", "x")], timeout=30, **kw)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert names in e.value.details() and "Traceback" not in e.value.details()
    assert queue_keys(platform) == before
    assert grpc_client.list_models()


def _abusive_body(kind: str, size: int, schema: object) -> str:
    base = '{"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2'
    if kind == "deep":
        return base + ', "stop": ' + "[" * size + "]" * size + "}"
    if kind == "number":
        return base + ', "seed": 1' + "0" * size + "}"
    if kind == "big":
        return base + ', "user": "' + "a" * (size * 20) + '"}'
    if kind == "surrogate":
        return (
            '{"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "' + "\\ud800" * (size % 7 + 1) + '"}]}'
        )
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    return base + ', "tools": ' + json.dumps([tool]) + "}"


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(["deep", "number", "big", "surrogate", "schema"]),
    size=st.integers(10, 6000),
    schema=_json,
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
)
def test_hardening_abuse_over_http_is_never_a_server_error(platform, kind, size, schema, path):
    h = {"authorization": f"Bearer {platform.keys['acme']}", "content-type": "application/json"}
    raw = _abusive_body(kind, size, schema)
    r = httpx.post(platform.base_url + path, content=raw.encode(), headers=h, timeout=60)
    assert r.status_code < 500 or (r.status_code == 503 and r.json()["error"]["code"] == "unavailable"), r.text
    if r.status_code != 200:
        assert r.json()["error"]["message"] and "Traceback" not in r.text


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(schema=_json, content_size=st.integers(0, 80_000), depth=st.integers(0, 300))
def test_hardening_abuse_over_grpc_is_never_internal(platform, grpc_client, schema, content_size, depth):
    import grpc

    from ossfleet.v1 import ossfleet_pb2 as pb

    params = "[" * depth + json.dumps(schema) + "]" * depth
    try:
        grpc_client.generate(
            "gpt-oss-20b", [("user", "x" * content_size)], max_tokens=2, timeout=60,
            tools=[pb.Tool(name="f", parameters_json=params)],
        )  # fmt: skip
    except grpc.RpcError as e:
        assert e.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), e.details()
        assert e.details() and "Traceback" not in e.details()


def test_hardening_the_server_is_up_after_the_abuse(platform, grpc_client, client):
    assert grpc_client.list_models()
    assert client.models.list().data


def test_grpc_health_v1_answers_serving_on_its_own_port_without_metadata(platform):
    # What a Kubernetes gRPC probe or a load balancer sends: no `application` metadata, no key.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = platform.cfg.endpoints.grpc_health_port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ossfleet.v1.Ossfleet"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
