"""Llama 3.x, Gemma 2 and Mixtral served beside each other on real Serve and Redis, judged by the openai client.

Each family's tiny checkpoint carries its released chat template: prompts are rendered with it (the
input token count says so), greedy answers equal transformers' ``generate`` on that prompt, structured
output parses, Llama's JSON tool calls come back as tool calls, what a family cannot do is a 400 that
names the model, and a batch job runs lines of every family.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
import torch
from e2e_platform import free_port, start_platform, wait_for_batch
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.slow

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


def test_an_ab_alias_splits_end_users_between_llama_and_gemma_and_keeps_each_on_one(families):
    from ossfleet.control.apikeys import new_api_key, register_admin_key
    from ossfleet.redisdb import connect

    p, client = families
    admin = new_api_key()
    r = connect(p.redis_url)
    register_admin_key(r, p.cfg.redis.namespace, "ops", admin)
    r.close()
    tenant = p.base_url + "/admin/v1/tenants/acme"
    alias = {"assistant": {"models": {"llama-3.1-8b": 1, "gemma-2-9b": 1}}}
    patched = httpx.patch(tenant, headers={"authorization": f"Bearer {admin}"}, json={"aliases": alias}, timeout=30)
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
    bad = httpx.patch(tenant, headers={"authorization": f"Bearer {admin}"}, timeout=30,
                      json={"aliases": {"assistant": {"models": {"nope": 1}}}})  # fmt: skip
    assert bad.status_code == 400 and "'nope', not a configured model" in bad.json()["error"]["message"]
    httpx.patch(tenant, headers={"authorization": f"Bearer {admin}"}, json={"aliases": {"assistant": None}}, timeout=30)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="assistant", messages=USER, max_tokens=1)
