"""`ossfleet up` with gpt-oss-20b on vLLM (config/local-vllm.yaml's engine), judged by the official clients.

Runs in .venv-vllm (marker ``vllm``). One platform for the module: the README's run command in a
subprocess, on the test's embedded Redis, so the test reads the same queue state the platform keeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from e2e_platform import free_port, wait_for_batch

from ossfleet.control.apikeys import new_api_key
from ossfleet.control.budget import period_id
from ossfleet.control.keyspace import KeySpace
from ossfleet.redisdb import connect

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
ROOT = Path(__file__).resolve().parents[2]
NS = "e2e-vllm"


@pytest.fixture(scope="module")
def up(tmp_path_factory, tiny_checkpoint_wide, redis_server):
    tmp = tmp_path_factory.mktemp("vllm-up")
    cfg = yaml.safe_load((ROOT / "config/local-vllm.yaml").read_text())
    port, grpc_port = free_port(), free_port()
    cfg["redis"] = {"url": redis_server.url, "namespace": NS, "lease_s": 6}
    cfg["endpoints"].update(http_port=port, grpc_port=grpc_port, metrics_port=free_port())
    cfg["cluster"] = {"address": None, "local_gpus": 1, "local_cpus": 4}
    model = cfg["models"][0]
    assert model["engine"] == "vllm"
    # One sequence at a time, float32, no prefix cache: greedy tokens the same in every run (the kill test
    # compares a retried request's text with an uninterrupted run's).
    model.update(path=str(tiny_checkpoint_wide), dtype="float32", max_context=1024, max_batch_size=1)
    model["vllm"] = {"kv_cache_gib": 1, "prefix_caching": False, "headroom_slots": 0}
    cfg["models"] = [model]
    cfg["batch"]["storage_url"] = str(tmp / "files")
    cfg["limits"]["max_tokens"] = 256
    cfg["tenants"] = [
        {"name": "demo", "api_key_env": "OSSFLEET_DEMO_KEY", "budget": {"limit_usd": 100}, "max_band": "interactive"},
        {"name": "other", "api_key_env": "OSSFLEET_OTHER_KEY", "budget": {"limit_usd": 100}},
    ]
    path = tmp / "local-vllm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    keys = {"demo": new_api_key(), "other": new_api_key()}
    env = {**os.environ, "OSSFLEET_DEMO_KEY": keys["demo"], "OSSFLEET_OTHER_KEY": keys["other"]}
    log_path = tmp / "up.log"
    log = log_path.open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ossfleet.cli", "up", "--config", str(path)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 420
        while "Ctrl-C stops it." not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, "ossfleet up did not come up in time: " + log_path.read_text()[-4000:]
            time.sleep(1)
        yield {"url": f"http://127.0.0.1:{port}", "grpc": f"127.0.0.1:{grpc_port}", "keys": keys,
               "redis": redis_server.url, "log": log_path}  # fmt: skip
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(up):
    import openai

    return openai.OpenAI(base_url=up["url"] + "/v1", api_key=up["keys"]["demo"], timeout=120, max_retries=0)


def test_vllm_chat_stream_logprobs_and_n(client):
    r = client.chat.completions.create(
        model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}], max_tokens=16, temperature=0,
        logprobs=True, top_logprobs=2, n=2,
    )  # fmt: skip
    assert len(r.choices) == 2 and r.usage.completion_tokens > 0
    assert r.choices[0].message.content == r.choices[1].message.content  # greedy: both choices alike
    for c in r.choices:
        if c.message.content:
            assert c.logprobs is not None and c.logprobs.content
            for lp in c.logprobs.content:
                assert len(lp.top_logprobs) == 2 and lp.logprob <= 0
    chunks = list(
        client.chat.completions.create(
            model="gpt-oss-20b", messages=[{"role": "user", "content": "Hi"}], max_tokens=16, temperature=0,
            stream=True, stream_options={"include_usage": True},
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == (r.choices[0].message.content or "")
    assert chunks[-1].usage is not None and 2 * chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_vllm_structured_output_and_forced_tool_call(client):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "n": {"type": "integer"}},
              "required": ["city", "n"], "additionalProperties": False}  # fmt: skip
    for seed in (1, 2):
        r = client.chat.completions.create(
            model="gpt-oss-20b", messages=[{"role": "user", "content": "a city"}], max_tokens=200, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema, "strict": True}},
        )  # fmt: skip
        value = json.loads(r.choices[0].message.content)
        assert set(value) == {"city", "n"} and isinstance(value["n"], int)
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string", "maxLength": 10}}, "required": ["q"],
        "additionalProperties": False}}}  # fmt: skip
    r = client.chat.completions.create(
        model="gpt-oss-20b", messages=[{"role": "user", "content": "look it up"}], max_tokens=200, seed=3,
        tools=[tool], tool_choice="required",
    )  # fmt: skip
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and set(json.loads(call.function.arguments)) == {"q"}


def test_vllm_responses_api_and_grpc(up, client):
    r = client.responses.create(model="gpt-oss-20b", input="Hello", max_output_tokens=16, temperature=0)
    assert r.status in ("completed", "incomplete") and r.usage.output_tokens > 0
    from ossfleet.client import OssfleetClient

    with OssfleetClient(up["grpc"], up["keys"]["demo"]) as c:
        reply = c.generate("gpt-oss-20b", [("user", "Hello there")], max_tokens=8, temperature=0, ignore_eos=True,
                           timeout=120)  # fmt: skip
        assert reply.model == "gpt-oss-20b" and reply.usage.output_tokens == 8 and reply.usage.cost_usd > 0
        chunks = list(c.stream("gpt-oss-20b", [("user", "Hello there")], max_tokens=8, temperature=0, ignore_eos=True,
                               timeout=120))  # fmt: skip
        assert chunks and chunks[-1].usage.output_tokens == 8


def test_vllm_adapter_requests_are_refused_naming_the_model(client):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-oss-20b:mine", messages=[{"role": "user", "content": "x"}])
    assert "gpt-oss-20b" in str(e.value) and "vllm" in str(e.value)


def test_vllm_batch_job_in_queue_mode(client):
    lines = [json.dumps({"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": f"q{i}"}],
                                  "max_tokens": 6}}) for i in range(6)]  # fmt: skip
    f = client.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    b = wait_for_batch(client, b.id, timeout_s=300)
    assert b.status == "completed" and b.request_counts.completed == 6 and b.request_counts.failed == 0
    out = [json.loads(x) for x in client.files.content(b.output_file_id).text.splitlines() if x]
    assert sorted(o["custom_id"] for o in out) == [f"b{i}" for i in range(6)]


def _stream(url: str, key: str, out: dict, i: int, first: threading.Event | None = None) -> None:
    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "same prompt for all"}],
            "max_tokens": 200, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    text, finish, err, tokens = "", None, None, None
    try:
        with httpx.stream("POST", url, json=body, headers={"authorization": f"Bearer {key}"}, timeout=300) as r:
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    err = chunk["error"]["message"]
                for c in chunk.get("choices", []):
                    text += c["delta"].get("content") or c["delta"].get("reasoning_content") or ""
                    finish = c.get("finish_reason") or finish
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if first is not None and text:
                    first.set()
    except Exception as e:
        err = f"{type(e).__name__}: {e}"
    out[i] = {"text": text, "finish": finish, "error": err, "tokens": tokens}


def test_vllm_kill_minus_9_of_the_replica_mid_stream_serves_each_once_and_charges_once(up):
    ks, key = KeySpace(NS), up["keys"]["other"]
    url = up["url"] + "/v1/chat/completions"
    reference: dict = {}
    _stream(url, key, reference, 0)
    assert reference[0]["error"] is None and reference[0]["finish"] == "length", reference
    n = 4
    results: dict = {}
    under_way = [threading.Event() for _ in range(n)]
    threads = [threading.Thread(target=_stream, args=(url, key, results, i, under_way[i])) for i in range(n)]
    for t in threads:
        t.start()
    for ev in under_way:
        assert ev.wait(timeout=120), "a stream never started"
    pids = subprocess.run(["pgrep", "-f", "ServeReplica:model-gpt-oss-20b"], capture_output=True, text=True)
    assert pids.stdout.split(), "no replica process of gpt-oss-20b"
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    for t in threads:
        t.join(timeout=400)
    assert len(results) == n
    for res in results.values():
        assert res["error"] is None, res
        # Each token reached the client once: the text is the uninterrupted run's (one sequence at a time
        # and no prefix cache on this platform make vLLM's greedy tokens the same in every run; its CPU
        # kernels are not batch-invariant, so with others in the batch a retry could take other tokens).
        assert res["finish"] == "length" and res["tokens"] == 200 and res["text"] == reference[0]["text"]
    r = connect(up["redis"])
    usage = {k.decode(): int(v) for k, v in r.hgetall(ks.usage("other", period_id("monthly"))).items()}
    budget = {k.decode(): int(v) for k, v in r.hgetall(ks.budget("other", period_id("monthly"))).items()}
    assert usage["gpt-oss-20b:requests"] == n + 1  # each request settled exactly once
    assert budget["reserved"] == 0 and budget["spent"] == usage["cost_nusd"]
    retried = [int(r.hget(k, "attempts") or 0) for k in r.scan_iter(match=ks.req("gpt-oss-20b", "*"))]
    assert max(retried) >= 2  # the kill hit requests in flight
    r.close()
