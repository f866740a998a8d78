"""Redis queue state: what waits, in which order, for whom, at what cost.

Every state change is a Lua script in ``ossfleet/lua``, so no interleaving of gateways and replicas can
overspend a budget or lose a request. This module is the thin I/O edge around them: it packs arguments,
runs a script and turns its reply into a typed result or error.

Key names are :mod:`ossfleet.control.keyspace`'s: a model's queue and requests live in the model's hash slot, a
tenant's money and limits in the tenant's. On a single Redis each operation is one script over both
(admit, complete, fail, cancel, reap settle in the same call). On a Redis Cluster a script touches one
slot, so an operation that spans both runs as steps, each idempotent by request id:

- admit: ``reserve`` (tenant) -> ``enqueue`` (model); a refused enqueue is undone by ``unreserve``;
- complete / fail / cancel / reap: the model's script notes what is ``owed`` -> ``settle`` (tenant) ->
  the owed note is removed;
- :meth:`RequestQueue.reconcile` (run by the reaper) finishes what a crash between two steps left:
  reservations never seen enqueued (``claim`` marks the id aborted, then ``unreserve``), settlements owed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ossfleet.control.admission import Admission, Admitted, refusal
from ossfleet.control.cluster import ClusterSteps
from ossfleet.control.keyspace import KeySpace
from ossfleet.control.scripts import CLUSTER_SCRIPTS, QUEUE_SCRIPTS, _json, _s, _script, is_cluster
from ossfleet.errors import (
    LeaseLost,
    NotFound,
)
from ossfleet.protocol.events import FinishReason, StreamEvent
from ossfleet.protocol.load import ReplicaLoad
from ossfleet.protocol.work import WorkItem

if TYPE_CHECKING:
    import redis.asyncio

    from ossfleet.config import PlatformConfig

# Fair-share weights of input and output tokens (output tokens cost more to
# serve: one forward step each), as in VTC's default (OSDI 2024).
W_INPUT = 1.0
W_OUTPUT = 2.0


class Renewal(StrEnum):
    """A renewed lease: kept, or kept with the tenant's cancel to act on (the replica aborts the request)."""

    KEPT = "kept"
    CANCEL_REQUESTED = "cancel_requested"


@dataclass(frozen=True)
class Lease:
    """A request a replica pulled; it owns it until complete, fail or release."""

    request_id: str
    payload: str  # the WorkItem, encoded: decoded where it runs (an unreadable one then fails there)
    attempt: int
    tenant: str
    band: int
    enqueued_ms: int

    @cached_property
    def item(self) -> WorkItem:
        """The work item; raises UnsupportedWorkItem where this code cannot read it."""
        return WorkItem.decode(self.payload)


@dataclass(frozen=True)
class QueueDepth:
    model: str
    waiting: tuple[int, ...]  # per band
    oldest_wait_s: float  # 0 when nothing waits
    leased: int


@dataclass(frozen=True)
class Affinity:
    """What a replica serving LoRA adapters tells ``pull``: the adapters it holds, and whether it could load
    one more (False when every one it holds is in use and its LRU is full)."""

    held: tuple[str, ...]
    can_load: bool


def queue_model(name: str) -> str:
    """The model whose queue serves a model name (``<model>:<adapter>`` is served by ``<model>``'s)."""
    return name.partition(":")[0]


def _affinity_opts(a: Affinity | None) -> dict[str, Any]:
    """pull.lua's ``held``/``can_load`` (absent: the replica serves no adapters)."""
    return {} if a is None else {"held": ",".join(a.held), "can_load": a.can_load}


def _lease(reply: Any) -> Lease:
    return Lease(
        request_id=_s(reply[0]),
        payload=_s(reply[1]),
        attempt=int(reply[2]),
        tenant=_s(reply[3]),
        band=int(reply[4]),
        enqueued_ms=int(_s(reply[5])),
    )


class RequestQueue(ClusterSteps):
    """The queue scripts, bound to one Redis client and one namespace."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        namespace: str = "ossfleet",
        *,
        bands: int = 3,
        aging_s: float = 30.0,
        lease_s: float = 30.0,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.5,
        stream_ttl_s: int = 3600,
        max_queue: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.r = client
        self.keys = KeySpace(namespace)
        self.bands = bands
        self.aging_ms = int(aging_s * 1000)
        self.lease_s = lease_s
        self.lease_ms = int(lease_s * 1000)
        self.max_attempts = max_attempts
        self.backoff_ms = int(retry_backoff_s * 1000)
        self.stream_ttl_s = stream_ttl_s
        self.max_queue = max_queue
        self.clock = clock
        self.cluster = is_cluster(client)
        names = QUEUE_SCRIPTS + (CLUSTER_SCRIPTS if self.cluster else ())
        self._scripts = {name: client.register_script(_script(name, self.cluster)) for name in names}

    def _pull_bands(self, batch_band: bool) -> int:
        return self.bands if batch_band or self.bands == 1 else self.bands - 1

    def _pull_opts(self, model: str, owner: str, batch_band: bool, adapters: Affinity | None) -> dict[str, Any]:
        """pull.lua's options (also complete.lua's, for the next lease)."""
        return {"model": model, "nbands": self.bands, "now_ms": self._now(), "aging_ms": self.aging_ms,
                "owner": owner, "lease_ms": self.lease_ms, "w_in": W_INPUT, "pull_bands": self._pull_bands(batch_band),
                **_affinity_opts(adapters)}  # fmt: skip

    def _now(self) -> int:
        return int(self.clock() * 1000)

    async def _run(self, name: str, slot: str, *args: Any) -> Any:
        # KEYS[1] (a key of the slot the script touches) routes the call on a cluster.
        return await self._scripts[name](keys=[slot], args=[self.keys.namespace, *args])

    # -- gateway side -----------------------------------------------------------

    async def admit(self, a: Admission) -> Admitted:
        """Enqueue, or raise RateLimited / QueueFull / BudgetExhausted having changed nothing."""
        members = [(a.request_id, a.item, a.input_tokens, a.max_tokens, a.reserve_nusd)]
        members += [(m.request_id, m.item, m.input_tokens, m.max_tokens, m.reserve_nusd) for m in a.more]
        opts = {
            "tenant": a.tenant, "model": a.model, "band": a.band, "now_ms": self._now(), "idem": a.idempotency_key,
            "max_queue": self.max_queue, "budget_limit_nusd": a.budget_limit_nusd, "period": a.period,
            "rpm": a.rpm, "tpm": a.tpm, "nbands": self.bands, "weight": repr(float(a.weight)),
            "alert_at_nusd": a.alert_at_nusd, "max_inflight": a.max_inflight,
            "inflight_ttl_ms": self.stream_ttl_s * 1000, "track_inflight": a.track_inflight,
            "count_rate": a.count_rate, "adapter": a.adapter, "usage_name": a.usage_name,
            "group": [{"id": i, "in_tokens": n_in, "max_tokens": n_max, "reserve_nusd": r}
                      for i, _, n_in, n_max, r in members],
        }  # fmt: skip
        payloads = [item.encode() for _, item, *_ in members]
        encoded = _json(opts)
        if self.cluster:
            reply = await self._run("reserve", self.keys.tenant_slot(a.tenant), encoded)
            if _s(reply[0]) == "OK":
                queued = await self._run("enqueue", self.keys.model_slot(a.model), encoded, *payloads)
                if _s(queued[0]) != "OK":
                    await self._run("unreserve", self.keys.tenant_slot(a.tenant), a.tenant, *[m[0] for m in members])
                    reply = queued
        else:
            reply = await self._run("admit", self.keys.model_slot(a.model), encoded, *payloads)
        status = _s(reply[0])
        if status in ("OK", "DUP"):
            ids = tuple(_s(reply[1]).split(",")) if status == "DUP" else tuple(m[0] for m in members)
            return Admitted(ids[0], duplicate=status == "DUP", request_ids=ids)
        raise refusal(a, reply)

    async def locate(self, tenant: str, request_id: str) -> str | None:
        """The model of the tenant's request (None: no such request of this tenant, or long finished)."""
        m = await self.r.hget(self.keys.resv(tenant, request_id), "model")
        return None if m is None else _s(m)

    async def cancel(self, request_id: str, tenant: str) -> str:
        """Cancel the tenant's own request: 'cancelled', 'cancelling' or 'finished'."""
        model = await self.locate(tenant, request_id)
        if model is None:
            raise NotFound(f"no request {request_id!r} for this tenant")
        reply = await self._run(
            "cancel", self.keys.model_slot(model), model, request_id, tenant, self._now(), self.stream_ttl_s
        )
        status = _s(reply[0])
        if status == "NOT_FOUND":
            raise NotFound(f"no request {request_id!r} for this tenant")
        if status == "CANCELLED":
            await self._settle(model, [(request_id, tenant, "refund", 0, 0)])
        return status.lower()

    async def tenant_of(self, model: str, request_id: str) -> str | None:
        """The tenant whose request this is; None once its record is gone (expired or never there)."""
        t = await self.r.hget(self.keys.req(model, request_id), "tenant")
        return None if t is None else _s(t)

    async def read_stream(
        self, model: str, request_id: str, after: str = "0-0", block_ms: int | None = 1000
    ) -> list[StreamEvent]:
        """Events of a request's stream after entry ``after``, waiting up to ``block_ms`` for one (None: no wait)."""
        reply: Any = await self.r.xread({self.keys.stream(model, request_id): after}, block=block_ms, count=256)
        out: list[StreamEvent] = []
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                out.append(StreamEvent(_s(entry_id), {_s(k): _s(v) for k, v in fields.items()}))
        return out

    async def depth(self, model: str) -> QueueDepth:
        pipe = self.r.pipeline(transaction=False)
        for b in range(self.bands):
            pipe.zcard(self.keys.wait(model, b))
        for b in range(self.bands):
            pipe.zrange(self.keys.wait(model, b), 0, 0, withscores=True)
        pipe.zcard(self.keys.leases(model))
        res = await pipe.execute()
        waiting = tuple(int(x) for x in res[: self.bands])
        heads = [h[0][1] for h in res[self.bands : 2 * self.bands] if h]
        oldest = (self._now() - min(heads)) / 1000 if heads else 0.0
        return QueueDepth(model, waiting, max(oldest, 0.0), int(res[-1]))

    # -- replica side -----------------------------------------------------------

    async def pull(
        self,
        model: str,
        owner: str,
        *,
        batch_band: bool = True,
        adapters: Affinity | None = None,
        exclude_tenants: Sequence[str] = (),
    ) -> Lease | None:
        """Lease the next request for ``model``, or None when nothing waits.

        With ``batch_band=False`` the lowest band (batch) is left waiting. A replica that serves LoRA
        adapters says which it holds (``adapters``): within a band it takes a request of a held adapter (or
        of none) before one it would have to load (see ``prefer_held`` in common.lua). With
        ``exclude_tenants``, only a request of another tenant is leased (fair share among the rest, no
        affinity): a replica's headroom for tenants with nothing running there.
        """
        opts = self._pull_opts(model, owner, batch_band, None if exclude_tenants else adapters)
        if exclude_tenants:
            opts["exclude"] = ",".join(exclude_tenants)
        reply = await self._run("pull", self.keys.model_slot(model), _json(opts))
        return None if reply is None else _lease(reply)

    async def wait_for_work(self, model: str, timeout_s: float, client: redis.asyncio.Redis | None = None) -> None:
        """Block until an admit rings the model's bell (or the timeout passes).

        Use a client of its own: a blocking pop holds its connection.
        """
        await (client or self.r).blpop([self.keys.bell(model)], timeout=timeout_s)

    async def renew(self, model: str, request_id: str, owner: str) -> Renewal:
        """Extend the lease, saying whether the tenant asked to cancel meanwhile. Raises LeaseLost."""
        reply = await self._run(
            "renew", self.keys.model_slot(model), model, request_id, owner, self._now(), self.lease_ms
        )
        if _s(reply[0]) != "OK":
            raise LeaseLost(f"lease on {request_id} lost (state {_s(reply[1])})")
        return Renewal.CANCEL_REQUESTED if _s(reply[1]) == "1" else Renewal.KEPT

    async def emit(self, model: str, request_id: str, events: Sequence[dict[str, str]]) -> None:
        """Append output events to the request's stream (one round trip)."""
        key = self.keys.stream(model, request_id)
        pipe = self.r.pipeline(transaction=False)
        for e in events:
            pipe.xadd(key, e)  # type: ignore[arg-type]
        pipe.expire(key, self.stream_ttl_s)
        await pipe.execute()

    async def complete(
        self,
        model: str,
        request_id: str,
        owner: str,
        output_tokens: int,
        cost_nusd: int,
        finish_reason: FinishReason,
        *,
        events: Sequence[dict[str, str]] = (),
    ) -> bool:
        """Ack and settle (after appending ``events``, the request's last output, to its stream). False if
        it was already completed (a retry's duplicate); raises LeaseLost."""
        done, _ = await self._complete(
            model, request_id, owner, output_tokens, cost_nusd, finish_reason, False, events=events
        )
        return done

    async def complete_and_pull(
        self,
        model: str,
        request_id: str,
        owner: str,
        output_tokens: int,
        cost_nusd: int,
        finish_reason: FinishReason,
        *,
        batch_band: bool = True,
        adapters: Affinity | None = None,
        events: Sequence[dict[str, str]] = (),
    ) -> tuple[bool, Lease | None]:
        """Settle one request (after appending ``events``, its last output) and lease the next of ``model``
        in one round trip (the freed slot's work)."""
        return await self._complete(
            model, request_id, owner, output_tokens, cost_nusd, finish_reason, True, batch_band, adapters, events
        )

    async def _complete(
        self,
        model: str,
        request_id: str,
        owner: str,
        output_tokens: int,
        cost_nusd: int,
        finish_reason: FinishReason,
        pull: bool,
        batch_band: bool = True,
        adapters: Affinity | None = None,
        events: Sequence[dict[str, str]] = (),
    ) -> tuple[bool, Lease | None]:
        opts: dict[str, Any] = self._pull_opts(model, owner, batch_band, adapters) if pull else {}
        opts.update(model=model, id=request_id, owner=owner, out_tokens=output_tokens, cost_nusd=cost_nusd,
                    now_ms=self._now(), w_out=W_OUTPUT, nbands=self.bands, stream_ttl_s=self.stream_ttl_s,
                    finish_reason=str(finish_reason))  # fmt: skip
        if events:
            opts["events"] = [[x for kv in e.items() for x in kv] for e in events]
        reply = await self._run("complete", self.keys.model_slot(model), _json(opts))
        status = _s(reply[0])
        if status == "ALREADY":
            return False, None
        if status != "OK":
            raise LeaseLost(f"lease on {request_id} lost (state {_s(reply[1])})")
        if self.cluster:
            await self._settle(model, [(request_id, _s(reply[2]), "charge", cost_nusd, output_tokens)])
        return True, _lease(reply[3]) if reply[3] else None

    async def fail(
        self, model: str, request_id: str, owner: str, error: str, retryable: bool = True, status: int = 0
    ) -> str:
        """Report a failure: 'retry' (requeued after a backoff) or 'dead' (dead-lettered). ``status`` (400) marks
        an error that is the request's own, which its caller then gets as that status, not as a 500."""
        opts = {"model": model, "id": request_id, "owner": owner, "error": error, "retryable": retryable,
                "now_ms": self._now(), "max_attempts": self.max_attempts, "backoff_ms": self.backoff_ms,
                "stream_ttl_s": self.stream_ttl_s, **({"status": status} if status else {})}  # fmt: skip
        reply = await self._run("fail", self.keys.model_slot(model), _json(opts))
        outcome = _s(reply[0])
        if outcome == "LOST":
            raise LeaseLost(f"lease on {request_id} lost (state {_s(reply[1])})")
        if outcome == "DEAD":
            await self._settle(model, [(request_id, _s(reply[1]), "refund", 0, 0)])
        return outcome.lower()

    async def release(self, model: str, request_id: str, owner: str) -> None:
        """Hand a lease back untouched (a draining replica)."""
        reply = await self._run("release", self.keys.model_slot(model), model, request_id, owner)
        if _s(reply[0]) != "OK":
            raise LeaseLost(f"lease on {request_id} lost (state {_s(reply[1])})")

    async def reap(self, model: str, limit: int = 100) -> tuple[int, int, int]:
        """Requeue expired leases and due retries: (requeued, retried, dead)."""
        reply = await self._run(
            "reap", self.keys.model_slot(model), model, self._now(), self.max_attempts, limit, self.stream_ttl_s
        )
        owed = [_s(x) for x in reply[3:]]
        await self._settle(model, [(owed[i], owed[i + 1], "refund", 0, 0) for i in range(0, len(owed), 2)])
        return int(reply[0]), int(reply[1]), int(reply[2])

    async def heartbeat(self, model: str, owner: str, load: ReplicaLoad) -> None:
        """A replica says it is alive, with its load (read by the router and the autoscaler)."""
        now = self._now()
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.keys.alive(model), {owner: now})
        pipe.zremrangebyscore(self.keys.alive(model), "-inf", now - 60_000)
        pipe.hset(self.keys.replica(model), owner, json.dumps(load.metrics()))
        await pipe.execute()

    async def replicas(self, model: str, max_age_s: float = 5.0) -> dict[str, ReplicaLoad]:
        """Replicas that sent a heartbeat in the last ``max_age_s``, with their stats."""
        now = self._now()
        owners: list[Any] = await self.r.zrangebyscore(self.keys.alive(model), now - int(max_age_s * 1000), "+inf")
        if not owners:
            return {}
        raw = await self.r.hmget(self.keys.replica(model), owners)
        return {_s(o): ReplicaLoad.of(json.loads(v)) for o, v in zip(owners, raw, strict=True) if v is not None}

    async def alerts(self, after: str = "0-0", count: int = 100) -> list[StreamEvent]:
        """Budget alert events (soft limits crossed), oldest first."""
        reply: Any = await self.r.xrange(self.keys.alerts(), min=f"({after}" if after != "0-0" else "-", count=count)
        return [StreamEvent(_s(i), {_s(k): _s(v) for k, v in f.items()}) for i, f in reply]

    async def state(self, model: str, request_id: str) -> str | None:
        """A request's state alone (None once its record expired): one field, for readers that poll it."""
        v = await self.r.hget(self.keys.req(model, request_id), "state")
        return None if v is None else _s(v)

    async def request_state(self, model: str, request_id: str) -> dict[str, str]:
        raw = await self.r.hgetall(self.keys.req(model, request_id))
        return {_s(k): _s(v) for k, v in raw.items()}


def queue_for(cfg: PlatformConfig, client: Any, clock: Any = time.time) -> RequestQueue:
    """The request queue as this config shapes it (namespace, bands, leases)."""
    return RequestQueue(
        client,
        cfg.redis.namespace,
        bands=len(cfg.priorities.bands),
        aging_s=cfg.priorities.aging_s,
        lease_s=cfg.redis.lease_s,
        stream_ttl_s=cfg.redis.stream_ttl_s,
        clock=clock,
    )
