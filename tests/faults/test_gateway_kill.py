"""kill -9 of every gateway replica mid-stream: gRPC clients reconnect and resume, losing and repeating nothing."""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import pytest

from ossfleet.config import parse_config
from ossfleet.control.apikeys import new_api_key, register_key
from ossfleet.control.budget import period_id
from ossfleet.control.keyspace import KeySpace
from ossfleet.redisdb import connect

pytestmark = pytest.mark.slow


def gateway_pids() -> list[int]:
    """This cluster's live gateway replicas' processes: Serve's replica actors of the gateway deployment, from
    Ray's actor table in its GCS (no dashboard needed; another cluster's processes on this machine are not
    counted)."""
    from ray._private import state

    table = state.actors(actor_state_name="ALIVE")
    return sorted(a["Pid"] for a in table.values() if a["ActorClassName"] == "ServeReplica:gateway:Gateway")


def follow(client, rid: str, cursor: str, deadline: float) -> tuple[str, list[str], object]:
    """Resume a stream after ``cursor`` until its last chunk, reconnecting while no gateway answers."""
    text, cursors = "", []
    while time.monotonic() < deadline:
        try:
            # A short deadline per call: a connection that lands on a gateway still starting costs at most
            # this long, and the cursor keeps what was already read.
            for c in client.resume(rid, cursor, timeout=15):
                cursor = c.cursor
                cursors.append(c.cursor)
                text += c.content
                if c.finish_reason:
                    return text, cursors, c
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED,
                                grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED):  # fmt: skip
                raise
            time.sleep(0.5)
    raise AssertionError(f"stream {rid} did not finish")


def test_gateway_replicas_killed_mid_stream_clients_resume_every_chunk_once(
    ray_local, tiny_checkpoint, redis_server, free_port
):
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.client import OssfleetClient
    from ossfleet.serveconfig import serve_start_options

    port, grpc_port = free_port(), free_port()
    cfg = parse_config(
        {
            "redis": {"namespace": "gwkill", "lease_s": 5},
            "endpoints": {"http_port": port, "grpc_port": grpc_port, "gateway_replicas": 2},
            "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(tiny_checkpoint), "engine": "stub",
                        "stub_token_delay_s": 0.25, "max_batch_size": 16, "num_gpus": 1, "num_cpus": 0.25,
                        "price": {"input_per_1k": 0.001, "output_per_1k": 0.002}}],
            "tenants": [{"name": "acme", "budget": {"limit_usd": 100}}],
        },
        "<faults>",
    )  # fmt: skip
    serve.start(**serve_start_options(cfg, local=True, host="127.0.0.1"))
    assert deploy(build_applications(cfg, redis_server.url), timeout_s=180)
    key = new_api_key()
    r = connect(redis_server.url)
    register_key(r, "gwkill", "acme", key)
    target = f"127.0.0.1:{grpc_port}"
    msgs = [("user", "the same prompt for every stream")]
    with OssfleetClient(target, key) as c:
        chunks = list(c.stream("gpt-oss-20b", msgs, max_tokens=80, timeout=60))
    reference, ref_last = "".join(ch.content for ch in chunks), chunks[-1]
    assert reference and ref_last.usage.output_tokens > 10  # over 2.5 s of streaming

    n = 6
    results: dict[int, tuple[str, list[str], object]] = {}
    errors: list[BaseException] = []
    started = [threading.Event() for _ in range(n)]
    resumed: list[int] = []

    def client(i: int) -> None:
        try:
            with OssfleetClient(target, key) as c:
                text, cursors, rid, cursor = "", [], "", ""
                try:
                    for ch in c.stream("gpt-oss-20b", msgs, max_tokens=80, timeout=60):
                        rid, cursor = ch.request_id, ch.cursor
                        cursors.append(ch.cursor)
                        text += ch.content
                        started[i].set()
                        if ch.finish_reason:
                            results[i] = (text, cursors, ch)
                            return
                except grpc.RpcError:
                    pass  # the gateway died under the stream: reconnect and resume after the last chunk
                assert rid, "the stream broke before its first chunk"
                resumed.append(i)
                more, more_cursors, last = follow(c, rid, cursor, time.monotonic() + 120)
                results[i] = (text + more, cursors + more_cursors, last)
        except BaseException as e:
            errors.append(e)
        finally:
            started[i].set()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for e in started:  # every stream is under way (over 10 tokens at 250 ms each)
        assert e.wait(timeout=60)
    pids = gateway_pids()
    assert len(pids) == 2, pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    assert len(results) == n
    assert sorted(resumed) == list(range(n)), "the kill cut every stream, and each was resumed"
    for text, cursors, last in results.values():
        assert text == reference, "every chunk once, none lost"
        assert len(cursors) == len(set(cursors)), "no chunk delivered twice"
        assert last.finish_reason == ref_last.finish_reason
        assert last.usage.output_tokens == ref_last.usage.output_tokens
    ks = KeySpace("gwkill")
    usage = {k.decode(): int(v) for k, v in r.hgetall(ks.usage("acme", period_id("monthly"))).items()}
    budget = {k.decode(): int(v) for k, v in r.hgetall(ks.budget("acme", period_id("monthly"))).items()}
    assert usage["gpt-oss-20b:requests"] == n + 1  # each settled once: the kill cancelled nothing
    assert budget["reserved"] == 0
    assert set(gateway_pids()).isdisjoint(pids)  # Serve replaced the killed replicas
