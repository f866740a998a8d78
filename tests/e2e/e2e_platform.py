"""What e2e tests share besides fixtures: a running platform's handles, free ports.

(A module of its own: test modules importing from ``conftest`` would get
whichever conftest.py was imported first under that name.)
"""

from __future__ import annotations

import socket
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
