"""What e2e tests share besides fixtures: a running platform's handles, free ports.

(A module of its own: test modules importing from ``conftest`` would get
whichever conftest.py was imported first under that name.)
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from ossfleet.config import PlatformConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Platform:
    cfg: PlatformConfig
    base_url: str
    redis_url: str
    keys: dict[str, str]
    grpc_target: str


def wait_for_batch(
    client, batch_id: str, timeout_s: float = 240, until=("completed", "failed", "expired", "cancelled")
):
    """Poll the batch (the Batch API pushes nothing) until it reaches one of ``until``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.status in until:
            return b
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} still {b.status} after {timeout_s} s: {b.request_counts}")
