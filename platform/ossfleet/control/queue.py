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
from functools import cached_property
from importlib import resources
from typing import TYPE_CHECKING, Any

from ossfleet.control.keyspace import KeySpace
from ossfleet.control.pricing import NANO_PER_USD, usd
from ossfleet.errors import (
    BudgetExhausted,
    LeaseLost,
    NotFound,
    QueueFull,
    RateLimited,
)
from ossfleet.protocol.events import StreamEvent
from ossfleet.protocol.load import ReplicaLoad
from ossfleet.protocol.work import WorkItem

if TYPE_CHECKING:
    import redis.asyncio

    from ossfleet.config import PlatformConfig

# Fair-share weights of input and output tokens (output tokens cost more to
# serve: one forward step each), as in VTC's default (OSDI 2024).
W_INPUT = 1.0
W_OUTPUT = 2.0


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


def queue_model(name: str) -> str:
    """The model whose queue serves a model name (``<model>:<adapter>`` is served by ``<model>``'s)."""
    return name.partition(":")[0]


QUEUE_SCRIPTS = ("admit", "pull", "renew", "complete", "fail", "release", "reap", "cancel")
CLUSTER_SCRIPTS = ("reserve", "enqueue", "unreserve", "claim", "settle")


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True)
class Admission:
    """What the gateway asks to enqueue (after routing and validation)."""

    request_id: str
    tenant: str
    model: str
    band: int
    item: WorkItem
    input_tokens: int
    max_tokens: int
    reserve_nusd: int
    budget_limit_nusd: int  # -1: no limit
    period: str
    rpm: int
    tpm: int
    weight: float = 1.0
    idempotency_key: str = ""
    alert_at_nusd: int = 0  # 0: no soft alert
    max_inflight: int = 0  # requests the tenant may have waiting or running at once; 0: no limit
    track_inflight: bool = True  # False: a batch line, not one of the tenant's concurrent streams
    count_rate: bool = True  # False: a batch line, outside the tenant's rpm/tpm
    # Further requests admitted with this one, all or nothing (the choices of n > 1, a list of
    # prompts): same tenant, model and band; the limits apply to the group's sums.
    more: tuple[GroupMember, ...] = ()
    adapter: str = ""  # the LoRA adapter's cache key (AdapterRecord.key); "": the base model
    usage_name: str = ""  # what the tenant's usage is recorded under ("<model>:<adapter>"); "": the model

    @property
    def group_input_tokens(self) -> int:
        return self.input_tokens + sum(m.input_tokens for m in self.more)

    @property
    def group_tokens(self) -> int:
        return self.input_tokens + self.max_tokens + sum(m.input_tokens + m.max_tokens for m in self.more)


@dataclass(frozen=True)
class GroupMember:
    request_id: str
    item: WorkItem
    input_tokens: int
    max_tokens: int
    reserve_nusd: int


@dataclass(frozen=True)
class Admitted:
    request_id: str
    duplicate: bool
    request_ids: tuple[str, ...] = ()  # the whole group's, in order (the first is request_id)


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


def _affinity_args(a: Affinity | None) -> tuple[str, ...]:
    return () if a is None else (",".join(a.held), "1" if a.can_load else "0")


def _alert_fields(reply: Sequence[Any]) -> dict[str, str]:
    """A soft-alert event's fields, from a script's flat [name, value, ...] reply."""
    flat = [_s(x) for x in reply]
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def _lease(reply: Any) -> Lease:
    return Lease(
        request_id=_s(reply[0]),
        payload=_s(reply[1]),
        attempt=int(reply[2]),
        tenant=_s(reply[3]),
        band=int(reply[4]),
        enqueued_ms=int(_s(reply[5])),
    )


class RequestQueue:
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
        encoded = json.dumps(opts, separators=(",", ":"))
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
        if status == "RATE":
            what, retry_ms = _s(reply[1]), int(_s(reply[2]))
            limit = a.rpm if what == "requests" else a.tpm
            raise RateLimited(
                f"tenant {a.tenant!r} is over its {what}-per-minute limit ({limit}); retry in {retry_ms / 1000:.1f} s",
                retry_after_s=retry_ms / 1000,
                limit=what,
            )
        if status == "RATE_NEVER" and _s(reply[1]) == "requests":
            raise RateLimited(
                f"this request asks for {1 + len(a.more)} completions at once, more than tenant {a.tenant!r}'s "
                f"requests-per-minute limit ({a.rpm}); lower n",
                retry_after_s=60.0,
                limit="requests",
            )
        if status == "RATE_NEVER":
            raise RateLimited(
                f"this request needs {a.group_tokens} tokens (prompt + max_tokens), more than "
                f"tenant {a.tenant!r}'s tokens-per-minute limit ({a.tpm}); lower max_tokens or shorten the prompt",
                retry_after_s=60.0,
                limit="tokens",
            )
        if status == "CONCURRENCY":
            raise RateLimited(
                f"tenant {a.tenant!r} has {_s(reply[1])} requests in flight, its limit ({a.max_inflight}); "
                "retry when one finishes",
                retry_after_s=1.0,
                limit="concurrency",
            )
        if status == "QUEUE_FULL":
            raise QueueFull(f"the queue for model {a.model!r} is full ({_s(reply[1])} waiting); retry shortly")
        if status == "ABORTED":  # a cluster's reconciler gave up on this admission (the gateway stalled)
            raise QueueFull(f"the queue for model {a.model!r} did not take the request in time; retry shortly")
        if status == "BUDGET":
            left = int(_s(reply[1]))
            raise BudgetExhausted(
                f"tenant {a.tenant!r} has {usd(left)} of budget left (period {a.period}); this request "
                f"may cost up to {usd(a.reserve_nusd + sum(m.reserve_nusd for m in a.more))}. Lower max_tokens "
                "(or n) or raise the budget.",
                budget_left_usd=left / NANO_PER_USD,
            )
        raise RuntimeError(f"admit script replied {reply!r}")

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
        tail: list[Any] = []
        if exclude_tenants or adapters is not None:
            tail = [",".join(exclude_tenants), *_affinity_args(None if exclude_tenants else adapters)]
        reply = await self._run(
            "pull", self.keys.model_slot(model), model, self.bands, self._now(), self.aging_ms, owner,
            self.lease_ms, W_INPUT, self._pull_bands(batch_band), *tail,
        )  # fmt: skip
        return None if reply is None else _lease(reply)

    async def wait_for_work(self, model: str, timeout_s: float, client: redis.asyncio.Redis | None = None) -> None:
        """Block until an admit rings the model's bell (or the timeout passes).

        Use a client of its own: a blocking pop holds its connection.
        """
        await (client or self.r).blpop([self.keys.bell(model)], timeout=timeout_s)

    async def renew(self, model: str, request_id: str, owner: str) -> bool:
        """Extend the lease; True when the tenant asked to cancel. Raises LeaseLost."""
        reply = await self._run(
            "renew", self.keys.model_slot(model), model, request_id, owner, self._now(), self.lease_ms
        )
        if _s(reply[0]) != "OK":
            raise LeaseLost(f"lease on {request_id} lost (state {_s(reply[1])})")
        return _s(reply[1]) == "1"

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
        finish_reason: str,
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
        finish_reason: str,
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
        finish_reason: str,
        pull: bool,
        batch_band: bool = True,
        adapters: Affinity | None = None,
        events: Sequence[dict[str, str]] = (),
    ) -> tuple[bool, Lease | None]:
        tail = (
            json.dumps([[x for kv in e.items() for x in kv] for e in events], separators=(",", ":")) if events else ""
        )
        extra: tuple[object, ...] = ()
        if pull:
            extra = (self.aging_ms, self.lease_ms, W_INPUT, self._pull_bands(batch_band), *_affinity_args(adapters))
        reply = await self._run(
            "complete", self.keys.model_slot(model), model, request_id, owner, output_tokens, cost_nusd,
            self._now(), W_OUTPUT, self.bands, self.stream_ttl_s, finish_reason, tail, *extra,
        )  # fmt: skip
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
        reply = await self._run(
            "fail", self.keys.model_slot(model), model, request_id, owner, error, "1" if retryable else "0",
            self._now(), self.max_attempts, self.backoff_ms, self.stream_ttl_s, str(status) if status else "",
        )  # fmt: skip
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

    # -- a cluster's second steps and its reconciler -------------------------------------------------

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
