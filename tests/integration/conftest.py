"""Fixtures the queue-script tests share: a queue on the real embedded Redis, with a clock the test moves."""

from __future__ import annotations

import pytest

from ossfleet.queue import RequestQueue
from ossfleet.redisdb import connect_async


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def env(redis_server, namespace):
    client = connect_async(redis_server.url)
    clock = Clock()
    q = RequestQueue(client, namespace, bands=3, aging_s=30, lease_s=10, max_attempts=3, retry_backoff_s=1, clock=clock)
    yield q, clock
    await client.aclose()
