"""Fixtures the queue-script tests share: a queue on the real embedded Redis (``env``) or on a real Redis
Cluster of three primaries (``cenv``), with a clock the test moves."""

from __future__ import annotations

import pytest

from ossfleet.control.queue import RequestQueue
from ossfleet.redisdb import connect_async


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def _queue_env(url: str, namespace: str):
    client = connect_async(url)
    clock = Clock()
    q = RequestQueue(client, namespace, bands=3, aging_s=30, lease_s=10, max_attempts=3, retry_backoff_s=1, clock=clock)
    yield q, clock
    await client.aclose()


@pytest.fixture
async def env(redis_server, namespace):
    async for e in _queue_env(redis_server.url, namespace):
        yield e


@pytest.fixture
async def cenv(redis_cluster, namespace):
    async for e in _queue_env(redis_cluster.url, namespace):
        assert e[0].cluster
        yield e
