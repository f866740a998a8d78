"""ossfleet's autoscaling policy driving real Ray Serve replicas from a real Redis backlog."""

from __future__ import annotations

import asyncio
import time

import pytest

from ossfleet.config import parse_config
from ossfleet.queue import Admission
from ossfleet.redisdb import connect, connect_async

pytestmark = pytest.mark.slow


def running_replicas(app: str) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())


def test_backlog_grows_replicas_from_zero_then_they_shrink_back_and_nothing_is_lost(
    ray_cluster, tiny_checkpoint, redis_server
):
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.gateway import queue_for

    cfg = parse_config(
        {
            "redis": {"namespace": "autoscale", "lease_s": 10},
            "autoscaling": {"target_wait_s": 1, "upscale_delay_s": 1, "downscale_delay_s": 3, "idle_to_zero_s": 6,
                            "cold_start_s": 5},
            "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(tiny_checkpoint), "engine": "stub",
                        "stub_token_delay_s": 0.05, "max_batch_size": 2, "num_gpus": 1, "num_cpus": 0.25,
                        "replicas": {"min": 0, "max": 3, "initial": 0}}],
        },
        "<autoscaling-e2e>",
    )  # fmt: skip
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": 0})
    specs = [s for s in build_applications(cfg, redis_server.url) if s.name.startswith("model-")]
    assert deploy(specs, timeout_s=120)
    app = specs[0].name
    assert running_replicas(app) == 0  # nothing waits: zero replicas

    n = 30

    async def enqueue() -> None:
        client = connect_async(redis_server.url)
        q = queue_for(cfg, client)
        for i in range(n):
            await q.admit(Admission(f"as{i}", "t", "gpt-oss-20b", 1, {"prompt": [10, 11, 12], "max_tokens": 32}, 3, 32,
                                    100, 10**12, "p", 10**6, 10**9))  # fmt: skip
        await client.aclose()

    asyncio.run(enqueue())
    r = connect(redis_server.url)
    prefix = "{autoscale}:"

    def states() -> list[str]:
        return [(r.hget(f"{prefix}req:as{i}", "state") or b"").decode() for i in range(n)]

    peak, deadline = 0, time.monotonic() + 180
    while time.monotonic() < deadline and states().count("done") < n:
        peak = max(peak, running_replicas(app))
        time.sleep(0.5)
    assert states().count("done") == n  # every request served, none lost
    assert peak == 3  # the backlog grew the deployment to its max
    # Served and idle: back down to zero after the idle time.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and running_replicas(app) > 0:
        time.sleep(1)
    assert running_replicas(app) == 0
    budget = {k.decode(): int(v) for k, v in r.hgetall(f"{prefix}budget:t:p").items()}
    assert budget["reserved"] == 0  # each charged once, every reservation settled
    done = [int(r.hget(f"{prefix}req:as{i}", "attempts") or 0) for i in range(n)]
    assert all(a >= 1 for a in done)
    serve.delete(app)


def test_a_batch_backlog_alone_scales_only_as_far_as_the_batch_policy(ray_cluster, tiny_checkpoint, redis_server):
    """30 batch-band lines waiting on a model at zero replicas: one replica comes (the batch policy's
    default cap) and serves them all; the deployment never grows past it, though its max is 3."""
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.gateway import queue_for

    cfg = parse_config(
        {
            "redis": {"namespace": "autoscale-batch", "lease_s": 10},
            "autoscaling": {"target_wait_s": 1, "upscale_delay_s": 1, "downscale_delay_s": 3, "idle_to_zero_s": 600,
                            "cold_start_s": 5},
            "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(tiny_checkpoint), "engine": "stub",
                        "stub_token_delay_s": 0.05, "max_batch_size": 2, "num_gpus": 1, "num_cpus": 0.25,
                        "replicas": {"min": 0, "max": 3, "initial": 0}}],
        },
        "<autoscaling-batch-e2e>",
    )  # fmt: skip
    specs = [s for s in build_applications(cfg, redis_server.url) if s.name.startswith("model-")]
    assert deploy(specs, timeout_s=120)
    app = specs[0].name
    n = 30

    async def enqueue() -> None:
        client = connect_async(redis_server.url)
        q = queue_for(cfg, client)
        for i in range(n):
            await q.admit(Admission(f"bl{i}", "t", "gpt-oss-20b", 2, {"prompt": [10, 11, 12], "max_tokens": 16}, 3, 16,
                                    100, 10**12, "p", 10**6, 10**9))  # fmt: skip
        await client.aclose()

    asyncio.run(enqueue())
    r = connect(redis_server.url)

    def done() -> int:
        return [(r.hget(f"{{autoscale-batch}}:req:bl{i}", "state") or b"").decode() for i in range(n)].count("done")

    peak, deadline = 0, time.monotonic() + 240
    while time.monotonic() < deadline and done() < n:
        peak = max(peak, running_replicas(app))
        time.sleep(0.5)
    assert done() == n  # every batch line served
    assert peak == 1, f"batch work alone scaled the deployment to {peak} replicas (batch policy: 1)"
    serve.delete(app)
