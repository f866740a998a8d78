"""Llama 3.x, Gemma 2 and Mixtral served beside each other on real Serve and Redis, judged by the openai client.

Each family's tiny checkpoint carries its released chat template: prompts are rendered with it (the
input token count says so), greedy answers equal transformers' ``generate`` on that prompt, structured
output parses, Llama's JSON tool calls come back as tool calls, what a family cannot do is a 400 that
names the model, and a batch job runs lines of every family.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import jsonschema
import openai
import pytest
import torch
from e2e_platform import free_port, start_platform, wait_for_batch, wait_for_writes
from transformers import AutoModelForCausalLM, AutoTokenizer

from ossfleet.control.keyspace import KeySpace

pytestmark = pytest.mark.slow
GPU_NODES = 0  # one Ray node holds the three models' logical GPUs (nothing here spans nodes)
HEAD_GPUS = 3

MODELS = {"llama": "llama-3.1-8b", "gemma2": "gemma-2-9b", "mixtral": "mixtral-8x7b"}
USER = [{"role": "user", "content": "What is the capital of France?"}]
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"],
        "additionalProperties": False}  # fmt: skip


@pytest.fixture(scope="module")
def families(ray_cluster, tiny_family_checkpoints, redis_server, tmp_path_factory):
    model = {"device": "cpu", "max_batch_size": 4, "max_context": 512, "num_gpus": 1, "num_cpus": 0.25,
             "torch_threads": 1, "dtype": "float32",
             "price": {"input_per_1k": 0.001, "output_per_1k": 0.002}}  # fmt: skip
    raw = {
        "redis": {"namespace": "e2e-families", "lease_s": 10},
        "endpoints": {"http_host": "127.0.0.1", "http_port": free_port()},
        "limits": {"max_tokens": 256, "max_request_bytes": 65536, "max_messages": 64},
        "models": [
            {"name": name, "spec": name, "path": str(tiny_family_checkpoints[f]), **model} for f, name in MODELS.items()
        ],
        "tenants": [{"name": "acme", "budget": {"limit_usd": 100}, "max_band": "interactive"}],
    }
    p = start_platform(raw, ray_cluster, redis_server, tmp_path_factory)
    return p, openai.OpenAI(base_url=p.base_url + "/v1", api_key=p.keys["acme"], max_retries=0)


@pytest.mark.parametrize("family", list(MODELS))
def test_llama_gemma_mixtral_greedy_answers_equal_generate_on_their_chat_template(families, family,
                                                                                 tiny_family_checkpoints):  # fmt: skip
    _, client = families
    path = tiny_family_checkpoints[family]
    tok = AutoTokenizer.from_pretrained(path)
    prompt = tok.apply_chat_template(USER, add_generation_prompt=True, tokenize=True, return_dict=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()  # fmt: skip
    expected = tok.decode(ids, skip_special_tokens=True)

    r = client.chat.completions.create(model=MODELS[family], messages=USER, max_tokens=12, temperature=0)
    assert r.model == MODELS[family]
    assert r.usage.prompt_tokens == len(prompt)  # the family's template, not harmony
    assert r.choices[0].message.content == expected
    # Streamed, the same text in pieces.
    chunks = client.chat.completions.create(model=MODELS[family], messages=USER, max_tokens=12, temperature=0,
                                            stream=True)  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected


@pytest.mark.parametrize("family", list(MODELS))
def test_llama_gemma_mixtral_structured_output_logprobs_and_n(families, family):
    _, client = families
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}
    r = client.chat.completions.create(model=MODELS[family], messages=USER, max_tokens=40, n=2, seed=7,
                                       temperature=1.0, response_format=fmt, logprobs=True, top_logprobs=2)  # fmt: skip
    assert len(r.choices) == 2
    for c in r.choices:
        jsonschema.validate(json.loads(c.message.content), CITY)
        assert c.finish_reason == "stop" and c.logprobs.content


def test_llama_tool_calls_come_back_as_tool_calls(families, tiny_family_checkpoints):
    _, client = families
    tool = {"type": "function", "function": {"name": "weather", "description": "Weather in a city",
                                             "parameters": CITY}}  # fmt: skip
    r = client.chat.completions.create(model="llama-3.1-8b", messages=USER, tools=[tool], tool_choice="required",
                                       max_tokens=40, temperature=0)  # fmt: skip
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "weather" and r.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), CITY)
    # The call and its result go back into the conversation, rendered by Llama's template.
    follow = [*USER, r.choices[0].message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 20}'}]  # fmt: skip
    again = client.chat.completions.create(model="llama-3.1-8b", messages=follow, tools=[tool], max_tokens=4,
                                           temperature=0)  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tiny_family_checkpoints["llama"])
    hf_call = {"type": "function", "function": {"name": "weather", "arguments": json.loads(call.function.arguments)}}
    hf = [*USER, {"role": "assistant", "content": "", "tool_calls": [hf_call]},
          {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 20}'}]  # fmt: skip
    expected = tok.apply_chat_template(hf, tools=[tool], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert again.usage.prompt_tokens == len(expected)  # the call and its result, as Llama's template renders them


@pytest.mark.parametrize(
    ("model", "body", "param"),
    [
        ("gemma-2-9b", {"tools": [{"type": "function", "function": {"name": "f", "parameters": CITY}}]}, "tools"),
        ("mixtral-8x7b", {"tools": [{"type": "function", "function": {"name": "f", "parameters": CITY}}]}, "tools"),
        ("llama-3.1-8b", {"reasoning_effort": "high"}, "reasoning_effort"),
        ("gemma-2-9b", {"messages": [{"role": "system", "content": "Be brief."}, *USER]}, "messages"),
        ("mixtral-8x7b", {"messages": [{"role": "assistant", "content": "Hi"}, *USER]}, "messages"),
    ],
    ids=["gemma-tools", "mixtral-tools", "llama-reasoning-effort", "gemma-system-role", "mixtral-roles"],
)
def test_what_a_family_cannot_do_is_a_400_naming_the_model(families, model, body, param):
    p, _ = families
    r = httpx.post(p.base_url + "/v1/chat/completions", headers={"authorization": f"Bearer {p.keys['acme']}"},
                   json={"model": model, "messages": USER, "max_tokens": 4, **body}, timeout=60)  # fmt: skip
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and model in err["message"]


def test_a_batch_job_runs_llama_gemma_and_mixtral_lines(families, tmp_path):
    _, client = families
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(
        json.dumps({"custom_id": f"{name}-{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": name, "messages": USER, "max_tokens": 6, "temperature": 0}})
        for name in MODELS.values() for i in range(2)
    ) + "\n")  # fmt: skip
    f = client.files.create(file=src.open("rb"), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_for_batch(client, b.id)
    assert done.status == "completed" and done.request_counts.completed == 6
    lines = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(x["response"]["body"]["model"] for x in lines) == sorted([*MODELS.values()] * 2)
    assert all(x["response"]["status_code"] == 200 for x in lines)


@pytest.fixture(scope="module")
def admin(families):
    from ossfleet.control.apikeys import new_api_key, register_admin_key
    from ossfleet.redisdb import connect

    p, _ = families
    key = new_api_key()
    r = connect(p.redis_url)
    register_admin_key(r, p.cfg.redis.namespace, "ops", key)
    r.close()
    return {"authorization": f"Bearer {key}"}


def test_an_ab_alias_splits_end_users_between_llama_and_gemma_and_keeps_each_on_one(families, admin):
    p, client = families
    tenant = p.base_url + "/admin/v1/tenants/acme"
    alias = {"assistant": {"models": {"llama-3.1-8b": 1, "gemma-2-9b": 1}}}
    patched = httpx.patch(tenant, headers=admin, json={"aliases": alias}, timeout=30)
    assert patched.status_code == 200, patched.text
    assert "assistant" in [m.id for m in client.models.list()]  # the tenant's own model name
    served: dict[str, str] = {}
    for u in range(12):
        models = {client.chat.completions.create(model="assistant", messages=USER, max_tokens=1, user=f"user-{u}").model
                  for _ in range(2)}  # fmt: skip
        assert len(models) == 1  # a user's requests stay on one model; the answer names it
        served[f"user-{u}"] = models.pop()
    assert set(served.values()) == {"llama-3.1-8b", "gemma-2-9b"}
    # The header stands for the user field where a client cannot set it.
    by_header = httpx.post(p.base_url + "/v1/chat/completions",
                           headers={"authorization": f"Bearer {p.keys['acme']}", "x-ossfleet-user": "user-0"},
                           json={"model": "assistant", "messages": USER, "max_tokens": 1}, timeout=60)  # fmt: skip
    assert by_header.json()["model"] == served["user-0"]
    # An alias naming a model the platform lacks is refused, and nothing changes; null removes it.
    bad = httpx.patch(tenant, headers=admin, timeout=30,
                      json={"aliases": {"assistant": {"models": {"nope": 1}}}})  # fmt: skip
    assert bad.status_code == 400 and "'nope', not a configured model" in bad.json()["error"]["message"]
    httpx.patch(tenant, headers=admin, json={"aliases": {"assistant": None}}, timeout=30)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="assistant", messages=USER, max_tokens=1)


def new_tenant(p, admin, body: dict) -> openai.OpenAI:
    assert httpx.post(p.base_url + "/admin/v1/tenants", headers=admin, json=body, timeout=30).status_code == 201
    key = httpx.post(p.base_url + f"/admin/v1/tenants/{body['name']}/keys", headers=admin, timeout=30).json()["key"]
    return openai.OpenAI(base_url=p.base_url + "/v1", api_key=key, max_retries=0)


def comparison(p, admin, tenant: str, until, what: str) -> dict:
    """The tenant's comparison once ``until`` holds of it, read again after each write to the tenant's keys:
    shadows end after their primaries' answers, and their counters are written within a second."""

    def read() -> dict | None:
        c = httpx.get(p.base_url + f"/admin/v1/tenants/{tenant}/comparison?pairs=20", headers=admin, timeout=30)
        assert c.status_code == 200, c.text
        return c.json() if until(c.json()) else None

    return wait_for_writes(p.redis_url, KeySpace(p.cfg.redis.namespace).tenant_pattern(tenant), read, what)


def cost_usd(tokens_in: int, tokens_out: int, discount: float = 0.0) -> float:  # at the fixture's price
    return (tokens_in * 0.001 + tokens_out * 0.002) / 1000 * (1 - discount)


def test_llama_shadowed_by_gemma_at_the_batch_discount_answers_stored_side_by_side_and_compared(families, admin):
    import grpc

    from ossfleet.v1 import admin_pb2 as apb
    from ossfleet.v1 import admin_pb2_grpc

    p, acme = families
    shadows = {"llama-3.1-8b": {"model": "gemma-2-9b", "fraction": 1.0}}
    client = new_tenant(p, admin, {"name": "initech", "shadows": shadows})
    answers = [client.chat.completions.create(model="llama-3.1-8b", messages=USER, max_tokens=6, temperature=0)
               for _ in range(2)]  # fmt: skip
    streamed = client.chat.completions.create(model="llama-3.1-8b", messages=USER, max_tokens=6, temperature=0,
                                              stream=True)  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert all(a.model == "llama-3.1-8b" for a in answers)  # the client hears its own model only
    # What Gemma answers the same prompt, asked directly (another tenant's request, at full price).
    gemma = acme.chat.completions.create(model="gemma-2-9b", messages=USER, max_tokens=6, temperature=0)

    def counted(c: dict) -> dict:
        return {(m["model"], m["role"]): m["requests"] + sum(m["refused"].values()) for m in c["models"]}

    # The pairs are written as each completes; the counters within a second.
    c = comparison(p, admin, "initech", lambda c: len(c["pairs"]) == 3 and counted(c) == {
        ("llama-3.1-8b", "served"): 3, ("gemma-2-9b", "shadow"): 3}, "three pairs, counted")  # fmt: skip
    assert sorted(x["primary"]["content"] for x in c["pairs"]) == sorted(
        [answers[0].choices[0].message.content, answers[1].choices[0].message.content, text]
    )
    for pair in c["pairs"]:
        assert pair["primary"]["model"] == "llama-3.1-8b" and pair["shadow"]["model"] == "gemma-2-9b"
        assert pair["shadow"]["content"] == gemma.choices[0].message.content and pair["shadow"]["error"] is None
        # Billed to the tenant at the batch discount.
        expected = cost_usd(gemma.usage.prompt_tokens, gemma.usage.completion_tokens, p.cfg.batch.discount)
        assert pair["shadow"]["cost_usd"] == pytest.approx(expected, rel=1e-6)
    models = {(m["model"], m["role"]): m for m in c["models"]}
    served, shadow = models["llama-3.1-8b", "served"], models["gemma-2-9b", "shadow"]
    assert served["requests"] == shadow["requests"] == 3 and set(models) == {("llama-3.1-8b", "served"),
                                                                             ("gemma-2-9b", "shadow")}  # fmt: skip
    for m in (served, shadow):
        assert m["ttft_s"]["count"] == 3 and m["ttft_s"]["p50"] <= m["ttft_s"]["p99"]
        assert m["itl_s"]["count"] == 3 and sum(m["histograms"]["ttft"]) == 3 and m["errors"] == 0
        assert sum(m["finish_reasons"].values()) == 3
    assert served["output_tokens"] == 3 * answers[0].usage.completion_tokens  # greedy: three equal answers
    assert shadow["output_tokens"] == 3 * gemma.usage.completion_tokens
    assert shadow["cost_per_1k_requests_usd"] == pytest.approx(1000 * pair["shadow"]["cost_usd"], rel=1e-6)
    usage = httpx.get(p.base_url + "/admin/v1/tenants/initech", headers=admin, timeout=30).json()["usage"]
    assert usage["models"]["gemma-2-9b"]["requests"] == 3  # the shadows are the tenant's usage
    # The same comparison over gRPC.
    channel = grpc.insecure_channel(p.grpc_target)
    try:
        got = admin_pb2_grpc.AdminStub(channel).GetComparison(
            apb.ComparisonRequest(name="initech", pairs=3),
            metadata=[("application", "gateway"), ("authorization", admin["authorization"])], timeout=30)  # fmt: skip
    finally:
        channel.close()
    assert [(m.model, m.role, m.requests, m.ttft_s.count) for m in got.models] == [
        ("llama-3.1-8b", "served", 3, 3), ("gemma-2-9b", "shadow", 3, 3)]  # fmt: skip
    assert got.models[1].ttft_s.p99 == pytest.approx(shadow["ttft_s"]["p99"])
    assert [x.shadow.content for x in got.pairs] == [x["shadow"]["content"] for x in c["pairs"]]
    # And through the CLI.
    out = subprocess.run([sys.executable, "-m", "ossfleet.cli", "compare", "--tenant", "initech", "--url", p.base_url],
                         env={**os.environ, "OSSFLEET_ADMIN_KEY": admin["authorization"].split()[1]},
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = {tuple(line.split()[:3]) for line in out.stdout.splitlines()}
    assert ("llama-3.1-8b", "served", "3") in rows and ("gemma-2-9b", "shadow", "3") in rows
    assert "shadow: 100% of llama-3.1-8b's requests also go to gemma-2-9b" in out.stdout


def test_a_gemma_shadow_the_budget_cannot_cover_is_refused_and_the_llama_primary_still_served(families, admin):
    p, acme = families
    probe = {m: acme.chat.completions.create(model=m, messages=USER, max_tokens=4, temperature=0)
             for m in ("llama-3.1-8b", "gemma-2-9b")}  # fmt: skip
    primary = cost_usd(probe["llama-3.1-8b"].usage.prompt_tokens, 4)
    shadow = cost_usd(probe["gemma-2-9b"].usage.prompt_tokens, 4, p.cfg.batch.discount)
    # Enough for the request (all of its reservation) and half its shadow.
    client = new_tenant(p, admin, {"name": "thrifty", "budget": {"limit_usd": primary + shadow / 2},
                                   "shadows": {"llama-3.1-8b": {"model": "gemma-2-9b", "fraction": 1.0}}})  # fmt: skip
    r = client.chat.completions.create(model="llama-3.1-8b", messages=USER, max_tokens=4, temperature=0,
                                       extra_body={"ignore_eos": True})  # fmt: skip
    assert r.usage.completion_tokens == 4
    c = comparison(p, admin, "thrifty", lambda c: len(c["pairs"]) == 1 and len(c["models"]) == 2,
                   "the refused shadow's pair, counted")  # fmt: skip
    models = {(m["model"], m["role"]): m for m in c["models"]}
    assert models["gemma-2-9b", "shadow"]["refused"] == {"budget_exhausted": 1}
    assert models["gemma-2-9b", "shadow"]["requests"] == 0 and models["llama-3.1-8b", "served"]["requests"] == 1
    (pair,) = c["pairs"]
    assert pair["primary"]["content"] == r.choices[0].message.content
    assert pair["shadow"]["error"].startswith("budget_exhausted") and pair["shadow"]["cost_usd"] == 0
    usage = httpx.get(p.base_url + "/admin/v1/tenants/thrifty", headers=admin, timeout=30).json()["usage"]
    assert "gemma-2-9b" not in usage["models"] and usage["reserved_usd"] == 0


def test_the_console_plots_llama_against_its_gemma_shadow_in_headless_chromium(families, admin):
    from e2e_platform import headless_chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    p, _ = families
    c = comparison(p, admin, "initech", lambda c: len(c["pairs"]) == 3, "the first test's pairs")
    with headless_chromium() as driver:
        driver.get(p.base_url + "/console")
        driver.execute_script("window.cspViolations = []; document.addEventListener('securitypolicyviolation', "
                              "e => window.cspViolations.push(e.violatedDirective))")  # fmt: skip
        driver.find_element(By.ID, "key").send_keys(admin["authorization"].split()[1])
        driver.find_element(By.ID, "cmp-tenant").send_keys("initech")
        driver.find_element(By.ID, "connect").click()

        def count(selector: str) -> int:
            return driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector)

        WebDriverWait(driver, 60).until(lambda d: count("#cmp-pairs tr") == 3)
        for m in c["models"]:
            row = f"#cmp-models tr[data-model='{m['model']}'][data-role='{m['role']}']"
            assert count(row) == 1
            for plot in ("#cmp-ttft polyline", "#cmp-itl polyline", "#cmp-cost rect"):
                assert count(f"{plot}[data-model='{m['model']}'][data-role='{m['role']}']") == 1, plot
        # The CDF ends at every request: its last point is at the top of the plot.
        last = driver.execute_script("return document.querySelector('#cmp-ttft polyline').getAttribute('points')"
                                     ".trim().split(' ').pop().split(',')[1]")  # fmt: skip
        assert float(last) == pytest.approx(5, abs=0.01)
        shown = driver.execute_script("return document.querySelector('#cmp-pairs tr td.answer:last-child').textContent")
        assert shown.startswith("gemma-2-9b: ")
        assert "100% of llama-3.1-8b also to gemma-2-9b" in driver.find_element(By.ID, "cmp-shadows").text
        assert driver.execute_script("return window.cspViolations") == []
