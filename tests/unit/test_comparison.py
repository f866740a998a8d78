"""Comparing models on a tenant's traffic, as plain data: buckets and percentiles, what a request's end counts
for, the shadow's sampling and request, and the config's checks of shadows."""

from __future__ import annotations

import random

import pytest

from ossfleet.config import parse_config
from ossfleet.control.comparison import (
    BOUNDS,
    Observation,
    bucket,
    increments,
    observed,
    percentile,
    sampled,
    summarize,
)
from ossfleet.control.shadow import shadow_request
from ossfleet.harmony import Message
from ossfleet.protocol.chat import ChatRequest

MODELS = [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": "/x"},
          {"name": "gpt-oss-120b", "spec": "gpt-oss-120b", "path": "/z"},
          {"name": "llama-3.1-8b", "spec": "llama-3.1-8b", "path": "/y"}]  # fmt: skip


def test_a_percentile_read_from_the_buckets_is_within_one_bucket_of_the_true_one():
    rng = random.Random(7)
    values = [rng.lognormvariate(-3, 1.2) for _ in range(5000)]  # around 50 ms, a long tail
    counts = [0] * (len(BOUNDS) + 1)
    for v in values:
        counts[bucket(v)] += 1
        assert v <= BOUNDS[bucket(v)] and (bucket(v) == 0 or v > BOUNDS[bucket(v) - 1])
    values.sort()
    for q in (0.5, 0.9, 0.99):
        true = values[int(q * len(values)) - 1]
        got = percentile(counts, q)
        assert got is not None and 1 / 1.25 <= got / true <= 1.25, (q, got, true)
    assert percentile([0] * (len(BOUNDS) + 1), 0.5) is None


def test_a_request_end_counts_its_finish_tokens_cost_and_three_latencies():
    end = {"type": "done", "finish_reason": "length", "output_tokens": "11", "cost_nusd": "5000", "queued_ms": "300"}
    obs = observed("acme", "llama-3.1-8b", "shadow", end, first_s=0.5, last_s=1.5)
    assert obs.queue_s == 0.3 and obs.ttft_s == pytest.approx(0.2) and obs.itl_s == pytest.approx(0.1)
    inc = increments(obs)
    p = "llama-3.1-8b|shadow|"
    assert inc[p + "requests"] == 1 and inc[p + "finish:length"] == 1 and inc[p + "output_tokens"] == 11
    assert inc[p + f"ttft:{bucket(0.2)}"] == 1 and inc[p + f"queue:{bucket(0.3)}"] == 1
    failed = observed("acme", "llama-3.1-8b", "served", {"type": "error", "error": "boom"}, None, None)
    assert increments(failed) == {"llama-3.1-8b|served|requests": 1, "llama-3.1-8b|served|errors": 1}
    refused = Observation("acme", "llama-3.1-8b", "shadow", refused="budget_exhausted")
    assert increments(refused) == {"llama-3.1-8b|shadow|refused:budget_exhausted": 1}


def test_summaries_add_up_per_model_and_role_served_first():
    raw: dict[str, int] = {}
    obs = [Observation("a", "gpt-oss-20b", "served", "stop", 10, 2000, 0.05, 0.0, 0.01)] * 3 + [
        Observation("a", "llama-3.1-8b", "shadow", "length", 4, 500, 0.02, 1.0, 0.005),
        Observation("a", "llama-3.1-8b", "shadow"),  # an error
        Observation("a", "llama-3.1-8b", "shadow", refused="budget_exhausted"),
    ]
    for o in obs:
        for k, v in increments(o).items():
            raw[k] = raw.get(k, 0) + v
    served, shadow = (s.as_dict() for s in summarize(raw))
    assert (served["model"], served["role"], served["requests"], served["output_tokens"]) == (
        "gpt-oss-20b", "served", 3, 30)  # fmt: skip
    assert served["cost_per_1k_requests_usd"] == pytest.approx(2000 / 1e9 * 1000)
    assert served["finish_reasons"] == {"stop": 3} and served["ttft_s"]["count"] == 3
    assert 0.04 < served["ttft_s"]["p50"] <= 0.05 * 1.25
    assert shadow["requests"] == 2 and shadow["errors"] == 1 and shadow["refused"] == {"budget_exhausted": 1}
    assert shadow["mean_output_tokens"] == 4 and shadow["cost_usd"] == pytest.approx(500 / 1e9)


def test_a_fraction_of_request_ids_is_sampled_the_same_everywhere():
    ids = [f"{random.Random(i).getrandbits(128):032x}" for i in range(20_000)]
    assert not any(sampled(i, 0.0) for i in ids) and all(sampled(i, 1.0) for i in ids)
    share = sum(sampled(i, 0.5) for i in ids) / len(ids)
    assert abs(share - 0.5) < 0.015
    assert [sampled(i, 0.3) for i in ids[:50]] == [sampled(i, 0.3) for i in ids[:50]]


def test_the_shadow_request_is_a_batch_line_of_the_first_choice_in_the_shadows_words():
    cfg = parse_config({"models": MODELS}, "<t>")
    req = ChatRequest(model="gpt-oss-20b", messages=(Message("user", "hi"),), max_tokens=8, n=3, logprobs=2,
                      reasoning_effort="high", idempotency_key="k1", priority="interactive")  # fmt: skip
    s = shadow_request(req, "llama-3.1-8b", cfg)
    assert isinstance(s, ChatRequest)
    assert (s.model, s.batch, s.n, s.logprobs, s.idempotency_key, s.priority) == ("llama-3.1-8b", True, 1, None, "",
                                                                                  None)  # fmt: skip
    assert s.reasoning_effort is None  # Llama does not reason
    same_family = shadow_request(req, "gpt-oss-120b", cfg)
    assert isinstance(same_family, ChatRequest) and same_family.reasoning_effort == "high"
    ids = ChatRequest(model="gpt-oss-20b", messages=(), max_tokens=8, prompt=(1, 2, 3))
    assert shadow_request(ids, "llama-3.1-8b", cfg) == "token_ids_of_another_family"
    assert isinstance(shadow_request(ids, "gpt-oss-120b", cfg), ChatRequest)


def test_the_config_checks_shadows():
    ok = {"name": "acme", "shadows": {"gpt-oss-20b": {"model": "llama-3.1-8b", "fraction": 0.25}}}
    cfg = parse_config({"models": MODELS, "tenants": [ok]}, "<t>")
    assert cfg.tenants[0].shadows["gpt-oss-20b"].fraction == 0.25
    for bad, why in (
        ({"gpt-oss-20b": {"model": "nope", "fraction": 0.5}}, "'nope', not a configured model"),
        ({"nope": {"model": "llama-3.1-8b", "fraction": 0.5}}, "'nope', not a configured model"),
        ({"gpt-oss-20b": {"model": "gpt-oss-20b", "fraction": 0.5}}, "cannot shadow itself"),
        ({"gpt-oss-20b": {"model": "llama-3.1-8b", "fraction": 0}}, "greater than 0"),
        ({"gpt-oss-20b": {"model": "llama-3.1-8b", "fraction": 1.5}}, "less than or equal to 1"),
    ):
        with pytest.raises(Exception, match=why):
            parse_config({"models": MODELS, "tenants": [{"name": "acme", "shadows": bad}]}, "<t>")
    limited = {**ok, "allowed_models": ["gpt-oss-20b"]}
    with pytest.raises(Exception, match="which the tenant may not use"):
        parse_config({"models": MODELS, "tenants": [limited]}, "<t>")


def test_the_cli_turns_shadow_options_into_the_tenant_fields_the_api_validates():
    import argparse

    from ossfleet.admin_cli import _fields, _tenant_options
    from ossfleet.config import TenantConfig

    p = argparse.ArgumentParser()
    _tenant_options(p)
    args = p.parse_args(["--shadow", "gpt-oss-20b=llama-3.1-8b:0.2", "--remove-shadow", "gpt-oss-120b"])
    want = {"gpt-oss-120b": None, "gpt-oss-20b": {"model": "llama-3.1-8b", "fraction": 0.2}}
    assert _fields(args) == {"shadows": want}
    # null removes a shadow, as PATCH merges it into the tenant's
    assert TenantConfig(name="acme", shadows=want).shadows.keys() == {"gpt-oss-20b"}
    with pytest.raises(SystemExit, match="MODEL=SHADOW_MODEL:FRACTION"):
        _fields(p.parse_args(["--shadow", "gpt-oss-20b=llama-3.1-8b"]))
    assert "shadows" not in _fields(p.parse_args([]))
