"""The replica's loop: pull from Redis while the engine has free slots, stream, settle.

One :class:`ReplicaWorker` runs inside each model replica. For every lease it
renders nothing (the gateway already tokenized the prompt), runs the engine,
parses the harmony output as it streams, appends events to the request's
Redis stream, and finally completes (or fails) the lease, which settles the
cost atomically. While a request runs its lease is renewed; a tenant's cancel
reaches the replica through a pub/sub message and aborts the engine request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ossfleet import metrics
from ossfleet.adapters.slots import AdapterSlots
from ossfleet.adapters.store import read_adapter
from ossfleet.chatformat import ChatFormat
from ossfleet.control.pricing import cost_nusd, with_surcharge
from ossfleet.control.queue import Affinity, Renewal
from ossfleet.engine.base import EngineError, ThroughputMeter
from ossfleet.errors import LeaseLost
from ossfleet.protocol.events import delta_event
from ossfleet.protocol.load import ReplicaLoad
from ossfleet.protocol.work import AdapterRef
from ossfleet.replica.generation import Generation, TokenBytes
from ossfleet.structured import Grammars
from ossfleet.tasks import cancel_and_wait

if TYPE_CHECKING:
    import redis.asyncio

    from ossfleet.config import PriceConfig
    from ossfleet.control.queue import Lease, RequestQueue
    from ossfleet.engine.base import AdapterEngine, Engine
    from ossfleet.harmony import Tokenizer
    from ossfleet.replica.cold_start import ColdStart
    from ossfleet.storage import FileStorage

log = logging.getLogger("ossfleet.replica.worker")


@dataclass(frozen=True)
class Pull:
    """What a replica leases next: from which bands, and (its headroom) from which tenants."""

    batch_band: bool  # the lowest band too (False keeps reserved slots free of batch lines)
    exclude_tenants: tuple[str, ...] = ()  # headroom: only a tenant with nothing running here
    affinity: bool = True  # tell the queue which adapters this replica holds


def next_pull(free_slots: int, headroom: int, reserved_slots: int, running_tenants: Iterable[str]) -> Pull | None:
    """The pull decision, pure: with a free slot, any band (the batch band only while more slots are free than
    ``reserved_slots``, kept for interactive requests); full but with engine headroom (vLLM's sequences beyond
    the slots), only a request of a tenant with nothing running here, which then starts at once rather than
    after the slots another tenant's long requests hold; otherwise nothing (wait for a slot)."""
    if free_slots > 0:
        return Pull(batch_band=free_slots > reserved_slots)
    if headroom > 0:
        return Pull(batch_band=False, exclude_tenants=tuple(sorted(set(running_tenants))), affinity=False)
    return None


class ReplicaWorker:
    def __init__(
        self,
        queue: RequestQueue,
        engine: Engine,
        tokenizer: Tokenizer,
        *,
        model: str,
        owner: str,
        price: PriceConfig,
        bell_client: redis.asyncio.Redis,
        reap_every_s: float = 1.0,
        reserved_slots: int = 0,
        storage: FileStorage | None = None,
        max_adapters: int = 0,
        adapter_surcharge: PriceConfig | None = None,
        cold_start: ColdStart | None = None,
        fmt: ChatFormat | None = None,
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.tokenizer = tokenizer
        self.fmt = fmt or ChatFormat.of(tokenizer)  # the model's chat format (default: harmony)
        self.grammars = Grammars(tokenizer)  # structured output: built on the first request that asks
        self.token_bytes = TokenBytes(tokenizer, self.fmt)
        self.model = model
        self.owner = owner
        self.price = price
        self.bell = bell_client
        self.reap_every_s = reap_every_s
        # Slots kept free of batch-band work, for interactive requests to start at once.
        self.reserved_slots = reserved_slots
        self.draining = False
        self.cold_start = cold_start  # marks the first pull and the first token
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tenant_of: dict[str, str] = {}  # of ``_tasks``, each request's tenant
        self._batch_running: set[str] = set()  # of ``_tasks``, batch-band lines
        self._slot_freed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._cancel_task: asyncio.Task[None] | None = None
        self.served = 0
        self.last_error: str | None = None
        self._completions = ThroughputMeter(window_s=30.0)
        # LoRA adapters: an LRU of ``max_adapters`` on the engine, read from ``storage`` on demand.
        self.storage = storage
        self.adapter_price = with_surcharge(price, adapter_surcharge) if adapter_surcharge else price
        self._adapter_paths: dict[str, str] = {}
        self.adapters: AdapterSlots | None = None
        self._lora: AdapterEngine | None = None
        if max_adapters > 0 and storage is not None and hasattr(engine, "load_adapter"):
            self._lora = cast("AdapterEngine", engine)
            self.adapters = AdapterSlots(max_adapters, self._load_adapter, self._unload_adapter)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name=f"ossfleet-worker-{self.model}")
        self._cancel_task = asyncio.create_task(self._listen_cancels(), name=f"ossfleet-cancels-{self.model}")

    @property
    def running(self) -> int:
        return len(self._tasks)

    def alive(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    async def drain(self, grace_s: float = 30.0) -> None:
        """Stop pulling; let running requests finish for ``grace_s``, then hand the rest back."""
        self.draining = True
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=grace_s)
        for rid in list(self._tasks):
            self.engine.abort(rid)
            task = self._tasks.get(rid)
            if task is not None:
                await cancel_and_wait(task)
            with contextlib.suppress(LeaseLost):
                await self.queue.release(self.model, rid, self.owner)
        for t in (self._loop_task, self._cancel_task):
            if t is not None:
                await cancel_and_wait(t)

    async def _record(self, load: ReplicaLoad) -> None:
        metrics.running(self.model, self.owner, load.running)
        metrics.tokens_per_s(self.model, self.owner, load.tokens_per_s)
        depth = await self.queue.depth(self.model)
        metrics.queue(self.model, {str(b): n for b, n in enumerate(depth.waiting)}, depth.oldest_wait_s)

    def _free_slots(self) -> int:
        """Slots this worker may still fill: the engine's, less leases not yet started on it."""
        return min(self.engine.free_slots(), self.engine.stats().max_slots - len(self._tasks))

    def _headroom(self) -> int:
        """Sequences the engine runs beyond its slots (``headroom_slots``, vLLM's), still free: for tenants
        with nothing running here."""
        extra = int(getattr(self.engine, "headroom_slots", 0))
        return self.engine.stats().max_slots + extra - len(self._tasks) if extra else 0

    def _start(self, lease: Lease) -> None:
        if self.cold_start is not None:
            self.cold_start.mark("first_pull")
        self._tenant_of[lease.request_id] = lease.tenant
        self._tasks[lease.request_id] = asyncio.create_task(self._serve(lease))

    def load(self) -> ReplicaLoad:
        """This replica's load, as its heartbeat and Serve's autoscaling metrics report it."""
        s = self.engine.stats()
        # Not the event loop's clock: Serve calls this (record_autoscaling_stats) on a thread with no loop.
        now = time.monotonic()
        a = self.adapters
        return ReplicaLoad(
            running=len(self._tasks),
            max_slots=s.max_slots,
            requests_per_s=self._completions.rate(now),
            kv_cache_used=s.kv_cache_used,
            running_batch=len(self._batch_running),
            completions=self._completions.count(now),
            service_s=self._completions.mean(now),
            tokens_per_s=s.tokens_per_s,
            served=self.served,
            adapters_held=None if a is None else len(a.held()),
            adapters_in_use=None if a is None else a.in_use(),
            adapter_loads=None if a is None else a.loads,
        )

    # -- LoRA adapters -----------------------------------------------------------------

    def _affinity(self) -> Affinity | None:
        a = self.adapters
        return None if a is None else Affinity(a.held(), a.can_load())

    async def _load_adapter(self, key: str) -> None:
        assert self.storage is not None
        config, data = await asyncio.to_thread(read_adapter, self.storage, self._adapter_paths[key])
        assert self._lora is not None
        await self._lora.load_adapter(key, config, data)
        log.info("event=adapter_loaded model=%s adapter=%s bytes=%d", self.model, key, len(data))

    async def _unload_adapter(self, key: str) -> None:
        self._adapter_paths.pop(key, None)
        assert self._lora is not None
        await self._lora.unload_adapter(key)

    async def _pin_adapter(self, ref: AdapterRef) -> str:
        if self.adapters is None:
            raise EngineError(f"model {self.model!r} serves no adapters on this replica")
        key = ref.key
        self._adapter_paths.setdefault(key, ref.path)
        try:
            await self.adapters.acquire(key)
        except FileNotFoundError:
            raise EngineError("the adapter was deleted (or replaced) after this request was queued") from None
        return key

    # -- the loop --------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_reap = next_reconcile = 0.0
        while not self.draining:
            try:
                if loop.time() >= next_reap:
                    metrics.leases(self.model, *await self.queue.reap(self.model))
                    if self.queue.cluster and loop.time() >= next_reconcile:
                        # A crash between a cluster's two steps (reserve/enqueue, complete/settle).
                        await self.queue.reconcile([self.model], await self.queue.tenant_names(), self.queue.lease_s)
                        next_reconcile = loop.time() + self.queue.lease_s / 2
                    load = self.load()
                    await self.queue.heartbeat(self.model, self.owner, load)
                    await self._record(load)
                    next_reap = loop.time() + self.reap_every_s
                pull = next_pull(self._free_slots(), self._headroom(), self.reserved_slots, self._tenant_of.values())
                if pull is None:  # full: wait for a slot to free
                    self._slot_freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), timeout=self.reap_every_s)
                    continue
                lease = await self.queue.pull(
                    self.model, self.owner, batch_band=pull.batch_band, exclude_tenants=pull.exclude_tenants,
                    adapters=self._affinity() if pull.affinity else None,
                )  # fmt: skip
                if lease is None:
                    await self.queue.wait_for_work(self.model, self.reap_every_s, client=self.bell)
                    continue
                self._start(lease)
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis down, say: keep trying, report unhealthy meanwhile
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("event=worker_loop_error model=%s error=%r", self.model, self.last_error)
                await asyncio.sleep(0.5)

    async def _listen_cancels(self) -> None:
        while True:
            try:
                pubsub = self.queue.r.pubsub()
                await pubsub.subscribe(self.queue.keys.cancel(self.model))
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    rid = msg["data"].decode() if isinstance(msg["data"], bytes) else str(msg["data"])
                    if rid in self._tasks:
                        self.engine.abort(rid)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("event=cancel_listener_error model=%s error=%r", self.model, f"{type(e).__name__}: {e}")
                await asyncio.sleep(0.5)

    async def _renew(self, lease: Lease) -> None:
        every = self.queue.lease_ms / 3000
        while True:
            await asyncio.sleep(every)
            try:
                if await self.queue.renew(self.model, lease.request_id, self.owner) is Renewal.CANCEL_REQUESTED:
                    self.engine.abort(lease.request_id)
            except LeaseLost:
                self.engine.abort(lease.request_id)
                return
            except Exception as e:
                log.warning("event=renew_error request_id=%s error=%r", lease.request_id, type(e).__name__)

    async def _serve(self, lease: Lease) -> None:
        rid = lease.request_id
        started = time.monotonic()
        if self.queue.bands > 1 and lease.band == self.queue.bands - 1:
            self._batch_running.add(rid)
        renew = asyncio.create_task(self._renew(lease))
        seq = 0
        adapter: str | None = None
        try:
            item = lease.item
            if item.adapter is not None:
                adapter = await self._pin_adapter(item.adapter)
            constraint = None
            # An engine that enforces grammars itself (vLLM) takes the grammar's source instead.
            if item.grammar and not getattr(self.engine, "enforces_grammar_text", False):
                try:
                    constraint = await asyncio.to_thread(self.grammars.constraint, item.grammar)
                except ValueError as e:
                    raise EngineError(str(e)) from None
            gen = Generation(
                self.tokenizer, rid, item, constraint=constraint, priority=lease.band, token_bytes=self.token_bytes,
                adapter=adapter, cache_salt=lease.tenant, fmt=self.fmt,
            )  # fmt: skip
            tail: list[dict[str, str]] = []  # the last output: written by complete, in the same round trip
            async for events in gen.run(self.engine):
                batch = [delta_event(e, lease.attempt, seq + i) for i, e in enumerate(events)]
                if seq == 0 and self.cold_start is not None:
                    self.cold_start.mark("first_token")
                seq += len(events)
                if gen.final:
                    tail = batch
                else:
                    await self.queue.emit(self.model, rid, batch)
            out_tokens, finish = gen.output_tokens, gen.finish
            price = self.adapter_price if adapter is not None else self.price
            cost = cost_nusd(price, len(item.prompt), out_tokens, item.discount)
            # This request's slot is free now: settle it and lease the next in one round trip.
            pull = None if self.draining else next_pull(self._free_slots() + 1, 0, self.reserved_slots, ())
            if pull is not None:
                if adapter is not None and self.adapters is not None:
                    self.adapters.release(adapter)  # its slot may serve the next request's adapter
                    adapter = None
                _, nxt = await self.queue.complete_and_pull(
                    self.model, rid, self.owner, out_tokens, cost, finish, batch_band=pull.batch_band,
                    adapters=self._affinity(), events=tail,
                )  # fmt: skip
                if nxt is not None:
                    self._start(nxt)
            else:
                await self.queue.complete(self.model, rid, self.owner, out_tokens, cost, finish, events=tail)
            self.served += 1
            now = time.monotonic()
            self._completions.add(now, 1, now - started)
        except EngineError as e:  # the engine refused it: no other replica would serve it better
            await self._fail(rid, str(e), retryable=False, status=e.status)
        except LeaseLost:
            log.info("event=lease_lost request_id=%s", rid)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("event=request_error request_id=%s", rid)
            await self._fail(rid, f"{type(e).__name__}: {e}", retryable=True)
        finally:
            renew.cancel()
            if adapter is not None and self.adapters is not None:
                self.adapters.release(adapter)
            self._tasks.pop(rid, None)
            self._tenant_of.pop(rid, None)
            self._batch_running.discard(rid)
            self._slot_freed.set()

    async def _fail(self, rid: str, error: str, retryable: bool, status: int = 0) -> None:
        with contextlib.suppress(LeaseLost):
            await self.queue.fail(self.model, rid, self.owner, error, retryable=retryable, status=status)
