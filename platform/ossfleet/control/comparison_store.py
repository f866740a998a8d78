"""The comparison's counters and side-by-side pairs in Redis, in each tenant's slot (a tenant's deletion
removes them with the rest of its slot).

Counters are one hash per tenant and UTC day (``cmp:<day>``, fields from ``comparison.increments``), kept
``KEEP_DAYS``; a read sums the days asked for. Pairs are a list, newest first, of the last ``KEEP_PAIRS``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ossfleet.control.comparison import BOUNDS, Observation, Pair, increments, summarize
from ossfleet.errors import InvalidRequest

if TYPE_CHECKING:
    import redis.asyncio

    from ossfleet.control.keyspace import KeySpace

KEEP_DAYS = 31
KEEP_PAIRS = 100


def day_of(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


class ComparisonStore:
    def __init__(self, client: redis.asyncio.Redis, keys: KeySpace) -> None:
        self.r = client
        self.keys = keys

    async def record(self, obs: Observation, now: float | None = None) -> None:
        key = self.keys.comparison(obs.tenant, day_of(time.time() if now is None else now))
        pipe = self.r.pipeline(transaction=False)
        for name, n in increments(obs).items():
            pipe.hincrby(key, name, n)
        pipe.expire(key, KEEP_DAYS * 86400)
        await pipe.execute()

    async def add_pair(self, tenant: str, pair: Pair) -> None:
        key = self.keys.pairs(tenant)
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(key, json.dumps(pair.as_dict(), separators=(",", ":")))
        pipe.ltrim(key, 0, KEEP_PAIRS - 1)
        pipe.expire(key, KEEP_DAYS * 86400)
        await pipe.execute()

    async def read(self, tenant: str, days: int = 7, pairs: int = 20, now: float | None = None) -> dict[str, Any]:
        """The tenant's comparison over the last ``days`` UTC days (today included) and its ``pairs`` latest
        pairs."""
        if not 1 <= days <= KEEP_DAYS:
            raise InvalidRequest(f"days must be a whole number from 1 to {KEEP_DAYS}", param="days")
        if not 0 <= pairs <= KEEP_PAIRS:
            raise InvalidRequest(f"pairs must be a whole number from 0 to {KEEP_PAIRS}", param="pairs")
        t = time.time() if now is None else now
        day_list = [day_of(t - 86400 * i) for i in range(days)]
        pipe = self.r.pipeline(transaction=False)
        for d in day_list:
            pipe.hgetall(self.keys.comparison(tenant, d))
        if pairs:
            pipe.lrange(self.keys.pairs(tenant), 0, pairs - 1)
        replies = await pipe.execute()
        total: dict[str, int] = {}
        for h in replies[:days]:
            for k, v in h.items():
                name = k.decode() if isinstance(k, bytes) else k
                total[name] = total.get(name, 0) + int(v)
        kept = [Pair.of(json.loads(x)).as_dict() for x in (replies[days] if pairs else [])]
        return {
            "tenant": tenant,
            "days": day_list[::-1],
            "bounds_s": [round(b, 6) for b in BOUNDS],
            "models": [s.as_dict() for s in summarize(total)],
            "pairs": kept,
        }
