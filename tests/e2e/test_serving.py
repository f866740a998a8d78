"""One real request through the whole path: HTTP -> Gateway -> Redis -> replica -> engine -> stream -> client."""

from __future__ import annotations

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from ossfleet.harmony import HarmonyRenderer, Message
from ossfleet.redisdb import connect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(platform):
    return openai.OpenAI(base_url=platform.base_url + "/v1", api_key=platform.keys["acme"], max_retries=0)


def queue_keys(platform) -> set[bytes]:
    """Every queue-state key (request records, lanes, waits, budgets) of the platform's namespace."""
    r = connect(platform.redis_url)
    ns = "{" + platform.cfg.redis.namespace + "}:"
    keys = {k for k in r.scan_iter(match=ns + "*") if not k.startswith((ns + "apikey:").encode())}
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
    stages = list_actors(filters=[("class_name", "=", "PipelineStage"), ("state", "=", "ALIVE")])
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


def test_served_request_is_charged_to_the_tenant(platform, client):
    r = connect(platform.redis_url)
    ns = "{" + platform.cfg.redis.namespace + "}:"
    before = {k: int(v) for k, v in r.hgetall(next(iter(r.scan_iter(match=ns + "budget:acme:*")), "x")).items()}
    client.chat.completions.create(model="gpt-oss-20b", messages=[{"role": "user", "content": "x"}], max_tokens=4)
    key = next(iter(r.scan_iter(match=ns + "budget:acme:*")))
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
