"""kill -9 of a model replica mid-stream: every accepted request completes once, charged once."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from ossfleet.config import parse_config
from ossfleet.control.apikeys import new_api_key, register_key
from ossfleet.control.budget import period_id
from ossfleet.control.keyspace import KeySpace
from ossfleet.redisdb import connect

pytestmark = pytest.mark.slow


def stream(url: str, key: str, out: dict, i: int, first: threading.Event | None = None) -> None:
    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "same prompt for all"}],
            "max_tokens": 64, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    text, finish, err = "", None, None
    try:
        with httpx.stream("POST", url, json=body, headers={"authorization": f"Bearer {key}"}, timeout=120) as r:
            import json

            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    err = chunk["error"]["message"]
                for c in chunk.get("choices", []):
                    text += c["delta"].get("content") or ""
                    finish = c.get("finish_reason") or finish
                if first is not None and text:
                    first.set()  # this stream is under way
    except Exception as e:
        err = f"{type(e).__name__}: {e}"
    out[i] = {"text": text, "finish": finish, "error": err}


@pytest.mark.parametrize("where", ["single", "cluster"])
def test_kill_minus_9_of_a_replica_mid_stream_loses_nothing_and_charges_once(
    where, request, ray_local, tiny_checkpoint, free_port
):
    """On one Redis, and on a Redis Cluster of three primaries (queue state sharded by model and tenant)."""
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.serveconfig import serve_start_options

    redis_url = request.getfixturevalue("redis_server" if where == "single" else "redis_cluster").url
    ns = f"killtest-{where}"
    ks = KeySpace(ns)
    port = free_port()
    cfg = parse_config(
        {
            "redis": {"namespace": ns, "lease_s": 3},
            "endpoints": {"http_port": port, "grpc_port": free_port()},
            "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(tiny_checkpoint), "engine": "stub",
                        "stub_token_delay_s": 0.1, "max_batch_size": 16, "num_gpus": 1, "num_cpus": 0.25,
                        "price": {"input_per_1k": 0.001, "output_per_1k": 0.002}}],
            "tenants": [{"name": "acme", "budget": {"limit_usd": 100}}],
        },
        "<faults>",
    )  # fmt: skip
    serve.start(**serve_start_options(cfg, local=True, host="127.0.0.1"))
    assert deploy(build_applications(cfg, redis_url), timeout_s=180)
    key = new_api_key()
    r = connect(redis_url)
    register_key(r, ns, "acme", key)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"

    reference: dict = {}
    stream(url, key, reference, 0)
    assert reference[0]["error"] is None and reference[0]["finish"] == "stop"

    n = 8
    results: dict = {}
    under_way = [threading.Event() for _ in range(n)]
    threads = [threading.Thread(target=stream, args=(url, key, results, i, under_way[i])) for i in range(n)]
    for t in threads:
        t.start()
    handle = serve.get_deployment_handle("gpt-oss-20b-replica", app_name="model-gpt-oss-20b")
    for ev in under_way:  # every stream has had content (each runs about 2 s on the stub)
        assert ev.wait(timeout=120), "a stream never started"
    stats = handle.stats.remote().result()
    assert stats["running"] > 0  # the kill hits requests in flight
    os.kill(stats["pid"], signal.SIGKILL)
    for t in threads:
        t.join(timeout=150)

    assert len(results) == n
    for res in results.values():
        # Served in full by the restarted replica, each chunk once (the stub is deterministic).
        assert res["error"] is None, res
        assert res["finish"] == "stop" and res["text"] == reference[0]["text"]
    # On a cluster a stream's end comes one round trip before its settlement: wait until none is owed.
    deadline = time.monotonic() + 30
    while r.zcard(ks.owed("gpt-oss-20b")) and time.monotonic() < deadline:
        time.sleep(0.05)
    usage = {k.decode(): int(v) for k, v in r.hgetall(ks.usage("acme", period_id("monthly"))).items()}
    budget = {k.decode(): int(v) for k, v in r.hgetall(ks.budget("acme", period_id("monthly"))).items()}
    assert usage["gpt-oss-20b:requests"] == n + 1  # each request settled exactly once
    assert budget["reserved"] == 0 and budget["spent"] == usage["cost_nusd"]
    retried = [int(r.hget(k, "attempts") or 0) for k in r.scan_iter(match=ks.req("gpt-oss-20b", "*"))]
    assert max(retried) >= 2  # the kill really hit requests in flight
    assert r.zcard(ks.owed("gpt-oss-20b")) == 0 and r.zcard(ks.pending("acme")) == 0  # nothing left unsettled
    r.close()
    serve.shutdown()  # the next run starts its own Serve on its own port
