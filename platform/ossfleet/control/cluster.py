"""A Redis Cluster's second steps and its reconciler, as part of the request queue.

On a cluster a script touches one slot, so an operation that spans a model's slot and a tenant's runs as
steps, each idempotent by request id: complete / fail / cancel / reap note in the model's slot what is
``owed``, then :meth:`ClusterSteps._settle` settles it in the tenant's slot and removes the note;
:meth:`ClusterSteps.reconcile` (run by the reaper) finishes what a crash between two steps left. On a single
Redis both are no-ops (each script settled at once).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from ossfleet.control.scripts import _s

if TYPE_CHECKING:
    import redis.asyncio

    from ossfleet.control.keyspace import KeySpace


def _alert_fields(reply: Sequence[Any]) -> dict[str, str]:
    """A soft-alert event's fields, from a script's flat [name, value, ...] reply."""
    flat = [_s(x) for x in reply]
    return dict(zip(flat[0::2], flat[1::2], strict=True))


class ClusterSteps:
    """The request queue's cluster steps (a base of :class:`~ossfleet.control.queue.RequestQueue`, which
    provides the attributes below)."""

    r: redis.asyncio.Redis
    keys: KeySpace
    cluster: bool
    stream_ttl_s: int
    _run: Callable[..., Coroutine[Any, Any, Any]]
    _now: Callable[[], int]
    locate: Callable[[str, str], Coroutine[Any, Any, str | None]]

    async def _settle(self, model: str, owed: Sequence[tuple[str, str, str, int, int]]) -> None:
        """On a cluster, the tenant's side of requests that ended in ``model``'s slot: each (id, tenant,
        'charge'|'refund', cost, output tokens) settled once, a crossed soft alert written to the alerts
        stream, then the owed note removed and the request's record given its TTL (it is kept while owed).
        Nothing to do on a single Redis (the model's script settled)."""
        if not self.cluster or not owed:
            return
        for request_id, tenant, kind, cost, out_tokens in owed:
            reply = await self._run(
                "settle", self.keys.tenant_slot(tenant), tenant, request_id, kind, cost, out_tokens, self.stream_ttl_s
            )
            if _s(reply[0]) == "OK" and len(reply) > 2:
                fields = _alert_fields(reply[2:])
                await self.r.xadd(self.keys.alerts(), fields, maxlen=10_000, approximate=True)  # type: ignore[arg-type]
        pipe = self.r.pipeline(transaction=False)  # one slot, the model's: one round trip
        pipe.zrem(self.keys.owed(model), *[o[0] for o in owed])
        for o in owed:
            pipe.expire(self.keys.req(model, o[0]), self.stream_ttl_s)
        await pipe.execute()

    async def tenant_names(self) -> list[str]:
        """Every registered tenant (whose slots the reconciler looks at)."""
        return sorted(_s(t) for t in await self.r.smembers(self.keys.tenants()))

    async def reconcile(self, models: Sequence[str], tenants: Sequence[str], grace_s: float = 30.0) -> dict[str, int]:
        """Finish, on a cluster, what a crash between two steps left undone, for steps older than
        ``grace_s``: a tenant's reservation never seen enqueued is given back (its id is first marked
        aborted in the model's slot, so a late enqueue of it is refused) or, if it was enqueued, confirmed;
        a settlement owed by a model's slot is made. Idempotent, safe beside live gateways and replicas.
        Returns counts: ``aborted``, ``confirmed``, ``settled``."""
        counts = {"aborted": 0, "confirmed": 0, "settled": 0}
        if not self.cluster:
            return counts
        before = self._now() - int(grace_s * 1000)
        for tenant in tenants:
            for raw in await self.r.zrangebyscore(self.keys.pending(tenant), "-inf", before, start=0, num=500):
                request_id = _s(raw)
                model = await self.locate(tenant, request_id)
                if model is None:  # settled or undone meanwhile
                    await self.r.zrem(self.keys.pending(tenant), request_id)
                    continue
                claim = await self._run("claim", self.keys.model_slot(model), model, request_id, self.stream_ttl_s)
                if _s(claim) == "ENQUEUED":
                    await self.r.zrem(self.keys.pending(tenant), request_id)
                    counts["confirmed"] += 1
                else:
                    await self._run("unreserve", self.keys.tenant_slot(tenant), tenant, request_id)
                    counts["aborted"] += 1
        for model in models:
            owed = []
            for raw in await self.r.zrangebyscore(self.keys.owed(model), "-inf", before, start=0, num=500):
                request_id = _s(raw)
                f = await self.r.hmget(self.keys.req(model, request_id), "tenant", "settle", "cost", "out_tokens")
                if f[0] is None:  # the record expired: nothing left to settle from
                    await self.r.zrem(self.keys.owed(model), request_id)
                    continue
                owed.append((request_id, _s(f[0]), _s(f[1]), int(_s(f[2] or 0)), int(_s(f[3] or 0))))
            await self._settle(model, owed)
            counts["settled"] += len(owed)
        return counts
