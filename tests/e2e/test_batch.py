"""Batch jobs end to end: real Ray (Serve and Ray Data), real embedded Redis, tiny checkpoints.

Each input line must end in exactly one of the output and error files, every
line is charged once, and a job is its owner's alone.
"""

from __future__ import annotations

import io
import json
import os
import time

import httpx
import pytest
from e2e_platform import Platform, free_port, wait_for_batch

from ossfleet.config import PriceConfig, parse_config
from ossfleet.control.apikeys import new_api_key, register_key
from ossfleet.control.budget import period_id
from ossfleet.control.keyspace import KeySpace
from ossfleet.control.pricing import cost_nusd
from ossfleet.redisdb import connect

pytestmark = pytest.mark.slow

NS = "batche2e"
KS = KeySpace(NS)
PRICE_20B = PriceConfig(input_per_1k=0.001, output_per_1k=0.002)
# Three GPU nodes for Serve's replicas, one for dedicated-mode engine actors.
GPU_NODES = 4


@pytest.fixture(scope="module")
def platform(ray_cluster, tiny_checkpoint, redis_server, tmp_path_factory) -> Platform:
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.serveconfig import serve_start_options

    port, grpc_port = free_port(), free_port()
    model = {"device": "cpu", "max_context": 512, "num_gpus": 1, "num_cpus": 0.25, "torch_threads": 1}
    cfg = parse_config(
        {
            "redis": {"namespace": NS, "lease_s": 4},
            "endpoints": {"http_host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port},
            "limits": {"max_tokens": 256},
            "batch": {"storage_url": str(tmp_path_factory.mktemp("files")), "window": 64,
                      "completion_windows": ["24h", "10s"], "dedicated_max_actors": 1,
                      "dedicated_rows_per_call": 64},
            "models": [
                # The real (tiny) model, run by ossfleet's batched engine.
                {"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(tiny_checkpoint), **model,
                 "max_batch_size": 16, "price": {"input_per_1k": 0.001, "output_per_1k": 0.002}},
                # A stand-in with a GPU's per-token pace, for the contention tests.
                {"name": "gpt-oss-120b", "spec": "gpt-oss-120b", "path": str(tiny_checkpoint), **model,
                 "engine": "stub", "stub_token_delay_s": 0.01, "max_batch_size": 8, "pipeline_stages": 1,
                 "price": {"input_per_1k": 0.003, "output_per_1k": 0.006}},
            ],
            "tenants": [{"name": "acme", "budget": {"limit_usd": 1000}, "max_band": "interactive"},
                        {"name": "globex", "budget": {"limit_usd": 1000}},
                        {"name": "frugal", "budget": {"limit_usd": 0.002}},
                        {"name": "thrifty", "budget": {"limit_usd": 0.002}}],
        },
        "<batch e2e>",
    )  # fmt: skip
    serve.start(**serve_start_options(cfg, local=True))
    assert deploy(build_applications(cfg, redis_server.url), timeout_s=300)
    client = connect(redis_server.url)
    keys = {}
    for t in cfg.tenants:
        keys[t.name] = new_api_key()
        register_key(client, NS, t.name, keys[t.name])
    client.close()
    return Platform(cfg, f"http://127.0.0.1:{port}", redis_server.url, keys, f"127.0.0.1:{grpc_port}")


def jsonl(n: int, model: str = "gpt-oss-20b", max_tokens: int = 2, prefix: str = "req") -> bytes:
    lines = [
        {"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": model, "messages": [{"role": "user", "content": f"question {i % 7}"}],
                  "max_tokens": max_tokens, "temperature": 0}}
        for i in range(n)
    ]  # fmt: skip
    return "\n".join(json.dumps(x) for x in lines).encode() + b"\n"


def openai_client(platform: Platform, tenant: str = "acme"):
    import openai

    return openai.OpenAI(base_url=platform.base_url + "/v1", api_key=platform.keys[tenant], max_retries=0)


def lines_of(client, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).read().decode().splitlines() if x]


def usage(platform: Platform, model: str, tenant: str = "acme") -> dict[str, int]:
    r = connect(platform.redis_url)
    try:
        raw = r.hgetall(KS.usage(tenant, period_id("monthly")))
        budget = r.hgetall(KS.budget(tenant, period_id("monthly")))
    finally:
        r.close()
    u = {k.decode(): int(v) for k, v in raw.items()}
    b = {k.decode(): int(v) for k, v in budget.items()}
    return {"requests": u.get(f"{model}:requests", 0), "cost": u.get("cost_nusd", 0),
            "reserved": b.get("reserved", 0), "spent": b.get("spent", 0)}  # fmt: skip


def assert_each_line_once(client, b, n: int, prefix: str = "req") -> tuple[list[dict], list[dict]]:
    out, err = lines_of(client, b.output_file_id), lines_of(client, b.error_file_id)
    ids = [x["custom_id"] for x in out + err]
    assert sorted(ids) == sorted(f"{prefix}-{i}" for i in range(n)), "every input line once, in one file"
    assert b.request_counts.total == n
    assert b.request_counts.completed == len(out) and b.request_counts.failed == len(err)
    return out, err


def test_openai_client_runs_a_2000_line_queue_job_end_to_end(platform):
    client = openai_client(platform)
    before = usage(platform, "gpt-oss-20b")
    f = client.files.create(file=("eval.jsonl", io.BytesIO(jsonl(2000))), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.status == "in_progress" and b.request_counts.total == 2000
    b = wait_for_batch(client, b.id)
    assert b.status == "completed", b
    out, err = assert_each_line_once(client, b, 2000)
    assert err == [] and len(out) == 2000
    for x in out:
        assert x["response"]["status_code"] == 200 and x["error"] is None
        body = x["response"]["body"]
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] >= 1
    # Greedy decoding: the same question gets the same answer whichever replica slot ran it.
    answers = {}
    for x in out:
        q = int(x["custom_id"].split("-")[1]) % 7
        answers.setdefault(q, set()).add(json.dumps(x["response"]["body"]["choices"][0]["message"]))
    assert all(len(a) == 1 for a in answers.values())
    after = usage(platform, "gpt-oss-20b")
    assert after["requests"] - before["requests"] == 2000, "each line charged once"
    assert after["reserved"] == 0
    # At the batch discount: the charge equals the sum of the lines' own costs at half price.
    assert after["cost"] - before["cost"] == sum(cost_of(x) for x in out)


def test_dedicated_mode_runs_2000_lines_on_ray_data_once_each(platform):
    client = openai_client(platform)
    before = usage(platform, "gpt-oss-20b")
    f = client.files.create(file=("eval.jsonl", io.BytesIO(jsonl(2000))), purpose="batch")
    b = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", extra_body={"mode": "dedicated"}
    )
    b = wait_for_batch(client, b.id)
    assert b.status == "completed", b
    out, err = assert_each_line_once(client, b, 2000)
    assert err == []
    after = usage(platform, "gpt-oss-20b")
    assert after["requests"] - before["requests"] == 2000
    assert after["spent"] - before["spent"] == sum(cost_of(x) for x in out)


@pytest.mark.parametrize("mode", ["queue", "dedicated"])
def test_structured_output_and_logprobs_lines_run_in_both_modes(platform, mode):
    import jsonschema

    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99},
              "ok": {"type": "boolean"}}, "required": ["n", "ok"], "additionalProperties": False}  # fmt: skip
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    rows = [{"custom_id": f"s-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 96,
                      "temperature": 0, "response_format": fmt, "logprobs": True}} for i in range(6)]  # fmt: skip
    client = openai_client(platform)
    f = client.files.create(file=("s.jsonl", io.BytesIO("\n".join(json.dumps(r) for r in rows).encode())),
                            purpose="batch")  # fmt: skip
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                              extra_body={"mode": mode})  # fmt: skip
    b = wait_for_batch(client, b.id)
    assert b.status == "completed", b
    out, err = assert_each_line_once(client, b, 6, prefix="s")
    assert err == []
    for x in out:
        choice = x["response"]["body"]["choices"][0]
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), schema)
        tokens = choice["logprobs"]["content"]
        assert tokens and bytes([c for t in tokens for c in t["bytes"]]).decode() == choice["message"]["content"]


def test_bad_lines_are_reported_with_their_numbers_and_nothing_runs(platform):
    client = openai_client(platform)
    good = jsonl(3).decode().splitlines()
    data = "\n".join([good[0], "{not json", good[1], json.dumps({"custom_id": "x", "method": "GET",
                      "url": "/v1/chat/completions", "body": {}}), good[2], good[0]]).encode()  # fmt: skip
    f = client.files.create(file=("bad.jsonl", io.BytesIO(data)), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.status == "failed"
    errs = {e.line: e.message for e in b.errors.data}
    assert sorted(errs) == [2, 4, 6], errs
    assert "JSON" in errs[2] and "method" in errs[4] and "repeats line 1" in errs[6]
    assert b.output_file_id is None and b.request_counts.completed == 0
    # With skip_invalid_lines the good lines run and the bad ones go to the error file, numbered.
    b = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
        extra_body={"skip_invalid_lines": True},
    )  # fmt: skip
    b = wait_for_batch(client, b.id)
    assert b.status == "completed" and b.request_counts.completed == 3 and b.request_counts.failed == 3
    err = lines_of(client, b.error_file_id)
    assert sorted(x["error"]["message"].split(":")[0] for x in err) == ["line 2", "line 4", "line 6"]


def test_a_batch_of_another_tenant_is_invisible_by_every_route(platform):
    acme, globex = openai_client(platform, "acme"), openai_client(platform, "globex")
    import openai

    f = acme.files.create(file=("a.jsonl", io.BytesIO(jsonl(5))), purpose="batch")
    b = acme.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        globex.batches.retrieve(b.id)
    with pytest.raises(openai.NotFoundError):
        globex.batches.cancel(b.id)
    with pytest.raises(openai.NotFoundError):
        globex.files.content(f.id)
    with pytest.raises(openai.NotFoundError):
        globex.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        globex.files.delete(f.id)
    with pytest.raises(openai.NotFoundError):  # nor may it start a batch from another's file
        globex.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.id not in [x.id for x in globex.batches.list().data]
    assert f.id not in [x.id for x in globex.files.list().data]
    b = wait_for_batch(acme, b.id)
    assert b.status == "completed"
    with pytest.raises(openai.NotFoundError):
        globex.files.content(b.output_file_id)
    assert acme.batches.retrieve(b.id).request_counts.completed == 5


def slow_job(client, n: int, max_tokens: int, prefix: str, mode: str = "queue", window: str = "24h"):
    """A job on the stub model (10 ms a token): slow enough to act on while it runs."""
    f = client.files.create(
        file=("slow.jsonl", io.BytesIO(jsonl(n, "gpt-oss-120b", max_tokens, prefix))), purpose="batch"
    )
    return client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window=window, extra_body={"mode": mode}
    )


def wait_progress(client, batch_id: str, done: int, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.request_counts.completed >= done:
            return b
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} made no progress: {b.request_counts}")


def test_cancel_finishes_lines_in_flight_and_accounts_for_every_line(platform):
    client = openai_client(platform)
    before = usage(platform, "gpt-oss-120b")
    b = slow_job(client, 400, 20, "cx")
    wait_progress(client, b.id, 20)
    assert client.batches.cancel(b.id).status in ("cancelling", "cancelled")
    b = wait_for_batch(client, b.id)
    assert b.status == "cancelled" and b.cancelled_at is not None
    out, err = assert_each_line_once(client, b, 400, "cx")
    assert 20 <= len(out) < 400
    assert {x["error"]["code"] for x in err} == {"batch_cancelled"}
    after = usage(platform, "gpt-oss-120b")
    assert after["requests"] - before["requests"] == len(out), "only lines that ran are charged"
    assert after["reserved"] == 0


def test_killing_the_job_driver_resumes_where_it_was(platform):
    import ray

    from ossfleet.batch.driver import RAY_NAMESPACE, driver_name

    client = openai_client(platform)
    before = usage(platform, "gpt-oss-120b")
    b = slow_job(client, 300, 10, "dk")
    wait_progress(client, b.id, 30)
    driver = ray.get_actor(driver_name(NS, b.id), namespace=RAY_NAMESPACE)
    pid = ray.get(driver.pid.remote())
    ray.kill(driver, no_restart=False)  # the process dies; Ray restarts the actor and retries run()
    done_at_kill = client.batches.retrieve(b.id).request_counts.completed
    b = wait_for_batch(client, b.id)
    assert b.status == "completed"
    _, err = assert_each_line_once(client, b, 300, "dk")
    assert err == [] and done_at_kill < 300
    after = usage(platform, "gpt-oss-120b")
    assert after["requests"] - before["requests"] == 300, "no line redone or charged twice"
    assert after["reserved"] == 0
    assert pid > 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # the driver leaves once the job is done
        try:
            ray.get_actor(driver_name(NS, b.id), namespace=RAY_NAMESPACE)
        except ValueError:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the job's driver is still alive after the job ended")


def test_kill_minus_9_of_a_replica_mid_job_loses_no_line(platform):
    import signal

    from ray import serve

    client = openai_client(platform)
    before = usage(platform, "gpt-oss-120b")
    b = slow_job(client, 200, 20, "rk")
    wait_progress(client, b.id, 10)
    handle = serve.get_deployment_handle("gpt-oss-120b-replica", app_name="model-gpt-oss-120b")
    stats = handle.stats.remote().result()
    assert stats["running"] > 0
    os.kill(stats["pid"], signal.SIGKILL)
    b = wait_for_batch(client, b.id)
    assert b.status == "completed"
    _, err = assert_each_line_once(client, b, 200, "rk")
    assert err == []
    after = usage(platform, "gpt-oss-120b")
    assert after["requests"] - before["requests"] == 200
    assert after["reserved"] == 0


def test_interactive_requests_go_first_while_a_queue_job_runs(platform):
    """No batch line is leased while an interactive request waits; latency idle vs loaded is reported."""
    client = openai_client(platform)
    chat = {"model": "gpt-oss-120b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    headers = {"authorization": f"Bearer {platform.keys['acme']}", "x-ossfleet-priority": "interactive"}
    url = platform.base_url + "/v1/chat/completions"

    def interactive(n: int) -> tuple[list[float], list[str]]:
        lat, ids = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            r = httpx.post(url, json=chat, headers=headers, timeout=60)
            lat.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-ossfleet-request-id"])
        return lat, ids

    idle, _ = interactive(10)
    b = slow_job(client, 600, 20, "lat")
    wait_progress(client, b.id, 10)
    r = connect(platform.redis_url)
    waiting_batch = r.zcard(KS.wait("gpt-oss-120b", 2))
    loaded, ids = interactive(10)
    client.batches.cancel(b.id)
    wait_for_batch(client, b.id)
    assert waiting_batch > 0, "batch lines were waiting while the interactive requests ran"

    def times(rid: str) -> tuple[int, int, str]:
        enq, lease, band = r.hmget(KS.req("gpt-oss-120b", rid), "enq_ms", "first_lease_ms", "band")
        return int(enq), int(lease), band.decode()

    batch_leases = []
    for key in r.scan_iter(match=KS.req("gpt-oss-120b", "*"), count=1000):
        enq, lease, band = r.hmget(key, "enq_ms", "first_lease_ms", "band")
        if band == b"2" and lease:
            batch_leases.append(int(lease))
    for rid in ids:
        enq, lease, band = times(rid)
        assert band == "0"
        jumped = [t for t in batch_leases if enq < t < lease]
        assert jumped == [], f"{len(jumped)} batch lines were leased while interactive request {rid} waited"
    r.close()
    idle_p50, loaded_p50 = sorted(idle)[5], sorted(loaded)[5]
    print(json.dumps({"interactive_p50_idle_s": round(idle_p50, 4), "interactive_p50_loaded_s": round(loaded_p50, 4),
                      "ratio": round(loaded_p50 / idle_p50, 2)}))  # fmt: skip


def test_grpc_batch_rpcs_submit_watch_download_and_isolate(platform):
    import grpc

    from ossfleet.client import OssfleetClient

    with OssfleetClient(platform.grpc_target, platform.keys["acme"]) as acme, \
            OssfleetClient(platform.grpc_target, platform.keys["globex"]) as globex:  # fmt: skip
        b = acme.submit_batch(jsonl(20, prefix="g"), metadata={"team": "eval"})
        assert b.status == "in_progress" and b.total == 20 and b.metadata["team"] == "eval"
        for call in (lambda: globex.get_batch(b.id), lambda: globex.cancel_batch(b.id),
                     lambda: globex.batch_results(b.id)):  # fmt: skip
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert b.id not in [x.id for x in globex.list_batches().batches]
        deadline = time.monotonic() + 120
        while (b := acme.get_batch(b.id)).status not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.3)
        assert b.status == "completed" and b.completed == 20 and "completed_at" in b.timestamps
        out = [json.loads(x) for x in acme.batch_results(b.id).decode().splitlines()]
        assert sorted(x["custom_id"] for x in out) == sorted(f"g-{i}" for i in range(20))
        assert b.id in [x.id for x in acme.list_batches().batches]
        with pytest.raises(grpc.RpcError) as e:  # no error file: said so
            acme.batch_results(b.id, errors=True)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "no error file" in e.value.details()
        bad = acme.submit_batch(b'{"custom_id": "a"}\n\xff\n')
        assert bad.status == "failed" and [e.line for e in bad.errors] == [1, 2]
        with pytest.raises(grpc.RpcError) as e:
            acme.submit_batch(jsonl(2), mode="sideways")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "mode" in e.value.details()


def test_cli_submits_waits_with_a_progress_bar_and_downloads(platform, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl(30, prefix="cli"))
    env = {**os.environ, "OSSFLEET_API_KEY": platform.keys["acme"]}
    cli = [sys.executable, "-m", "ossfleet.cli", "batch"]
    sub = subprocess.run([*cli, "submit", str(src), "--wait", "--poll-s", "0.3", "--url", platform.base_url],
                         env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    batch_id = sub.stdout.split()[0]
    assert "completed" in sub.stdout.splitlines()[-1] and "30 completed" in sub.stdout
    out = tmp_path / "out.jsonl"
    res = subprocess.run([*cli, "results", batch_id, "-o", f"file://{out}", "--url", platform.base_url],
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert sorted(json.loads(x)["custom_id"] for x in out.read_text().splitlines()) == sorted(
        f"cli-{i}" for i in range(30)
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "x"}\n')
    fail = subprocess.run([*cli, "submit", str(bad), "--url", platform.base_url], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert fail.returncode == 1 and "line 1: method must be 'POST'" in fail.stderr
    nokey = subprocess.run([*cli, "list", "--url", platform.base_url], env={k: v for k, v in env.items()
                           if k != "OSSFLEET_API_KEY"}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert nokey.returncode == 1 and "OSSFLEET_API_KEY" in nokey.stderr


def test_a_job_past_its_completion_window_expires_and_accounts_for_every_line(platform):
    client = openai_client(platform)
    b = slow_job(client, 500, 20, "ex", window="10s")
    b = wait_for_batch(client, b.id)
    assert b.status == "expired" and b.expired_at is not None
    out, err = assert_each_line_once(client, b, 500, "ex")
    assert 0 < len(out) < 500
    assert {x["error"]["code"] for x in err} == {"batch_expired"}


def test_isolation_sweep_tenant_b_reaches_nothing_of_tenant_a_by_any_api(platform):
    """Requests, streams, jobs, files and usage: every id-taking route, both APIs, answers NOT_FOUND."""
    import grpc
    import openai

    from ossfleet.client import OssfleetClient
    from ossfleet.v1 import ossfleet_pb2 as pb

    acme_http, globex_http = openai_client(platform, "acme"), openai_client(platform, "globex")
    with OssfleetClient(platform.grpc_target, platform.keys["acme"]) as acme, \
            OssfleetClient(platform.grpc_target, platform.keys["globex"]) as globex:  # fmt: skip
        usage_before = globex.usage()
        # A's live request and its stream.
        stream = acme.stream("gpt-oss-120b", [("user", "hello")], max_tokens=100)
        first = next(iter(stream))
        rid = first.request_id
        # A's job and files.
        f = acme_http.files.create(file=("a.jsonl", io.BytesIO(jsonl(3))), purpose="batch")
        job = acme.submit_batch(jsonl(3, prefix="iso"))
        denied = {
            "grpc Cancel": lambda: globex.cancel(rid),
            "grpc ResumeStream": lambda: list(globex.resume(rid, first.cursor)),
            "grpc GetBatch": lambda: globex.get_batch(job.id),
            "grpc CancelBatch": lambda: globex.cancel_batch(job.id),
            "grpc GetBatchResults": lambda: globex.batch_results(job.id),
            "grpc GetBatchResults errors": lambda: globex.batch_results(job.id, errors=True),
            "grpc SubmitBatch from A's file": lambda: globex.stub.SubmitBatch(
                pb.SubmitBatchRequest(input_file_id=f.id),
                metadata=globex.metadata),
            "grpc ListBatches after A's job": lambda: globex.list_batches(after=job.id),
        }  # fmt: skip
        for name, call in denied.items():
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.NOT_FOUND, name
        for name, call in {
            "http retrieve batch": lambda: globex_http.batches.retrieve(job.id),
            "http cancel batch": lambda: globex_http.batches.cancel(job.id),
            "http file": lambda: globex_http.files.retrieve(f.id),
            "http file content": lambda: globex_http.files.content(f.id),
            "http delete file": lambda: globex_http.files.delete(f.id),
            "http list after A's job": lambda: globex_http.batches.list(after=job.id),
        }.items():
            with pytest.raises(openai.NotFoundError):
                call()
            assert name
        assert job.id not in [b.id for b in globex.list_batches().batches]
        assert job.id not in [b.id for b in globex_http.batches.list().data]
        assert f.id not in [x.id for x in globex_http.files.list().data]
        # A's stream is intact, and A's spend never shows in B's usage.
        rest = list(acme.resume(rid, first.cursor))
        assert rest[-1].finish_reason and rest[-1].usage.output_tokens > 0
        usage_after = globex.usage()
        assert usage_after.spent_usd == usage_before.spent_usd and usage_after.tenant == "globex"
        assert acme.cancel_batch(job.id).status in ("cancelling", "cancelled", "completed", "finalizing")


@pytest.mark.parametrize("mode", ["queue", "dedicated"])
def test_a_job_that_meets_the_budget_stops_charging_and_reports_the_rest(platform, mode):
    from ossfleet.control.pricing import NANO_PER_USD

    tenant = {"queue": "frugal", "dedicated": "thrifty"}[mode]  # each mode its own budget
    client = openai_client(platform, tenant)
    f = client.files.create(file=("big.jsonl", io.BytesIO(jsonl(300, prefix=mode))), purpose="batch")
    b = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", extra_body={"mode": mode}
    )
    b = wait_for_batch(client, b.id)
    assert b.status == "completed"
    out, err = assert_each_line_once(client, b, 300, mode)
    assert err and {x["error"]["code"] for x in err} == {"budget_exhausted"}
    u = usage(platform, "gpt-oss-20b", tenant)
    limit = round(0.002 * NANO_PER_USD)
    line_cost = max(cost_of(x) for x in out) if out else 0
    # hardening: both modes reserve a line's most before it runs (queue mode at admission, dedicated mode in
    # the engine actor), so spend never passes the budget; what was reserved is all released at the end.
    assert u["spent"] <= limit, "a line reserves first: never over the budget"
    assert out and line_cost > 0 and u["spent"] >= line_cost, "lines ran until the budget could not hold another"
    assert u["reserved"] == 0


def cost_of(x: dict) -> int:
    """A served line's cost at the batch discount, from its own usage."""
    b = x["response"]["body"]["usage"]
    return cost_nusd(PRICE_20B, b["prompt_tokens"], b["completion_tokens"], 0.5)
