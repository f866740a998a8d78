"""The Lua scripts' sources and what every caller of them shares: is the client a cluster, reply decoding,
the compact JSON of an options object. Each script is ``CLUSTER`` (whether it must stay in one slot),
``lua/common.lua``, then its own file."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def _script(name: str, cluster: bool = False) -> str:
    """A script's source: ``CLUSTER`` (whether each script must stay in one slot), common.lua, its own."""
    lua = resources.files("ossfleet.control") / "lua"
    mode = f"local CLUSTER = {'true' if cluster else 'false'}\n"
    return mode + (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (each script must then touch one slot)."""
    from redis.asyncio.cluster import RedisCluster as AsyncCluster
    from redis.cluster import RedisCluster

    return isinstance(client, (AsyncCluster, RedisCluster))


QUEUE_SCRIPTS = ("admit", "pull", "renew", "complete", "fail", "release", "reap", "cancel")
CLUSTER_SCRIPTS = ("reserve", "enqueue", "unreserve", "claim", "settle")


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _json(o: dict[str, Any]) -> str:
    return json.dumps(o, separators=(",", ":"))
