"""Every open request stream of one gateway process, read with one XREAD; and the relay over them.

A gateway may relay a thousand streams at once. A blocking XREAD per stream
would hold a Redis connection per stream (and a pool sized for all of them);
the hub instead keeps the readers' positions and issues one XREAD over every
stream somebody waits on, on one connection, handing each reader the events
after its own position. A new reader joins the next read (``block_ms`` later
at most); events for streams already read return at once. On a Redis Cluster
one XREAD may only name keys of one slot: the hub then issues one XREAD per
slot (each model's streams share one), concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ossfleet import metrics
from ossfleet.control.comparison import Observation, observed
from ossfleet.control.pricing import NANO_PER_USD
from ossfleet.control.queue import queue_model
from ossfleet.control.scripts import _s, is_cluster
from ossfleet.errors import RequestFailed
from ossfleet.protocol.events import ENDED, TERMINAL, Outcome, StreamEvent, fold
from ossfleet.tasks import cancel_and_wait

if TYPE_CHECKING:
    import redis.asyncio

    from ossfleet.control.queue import RequestQueue

log = logging.getLogger("ossfleet.control.streams")


def valid_position(entry_id: str) -> bool:
    """Whether Redis takes ``entry_id`` as a stream position: ``<ms>-<seq>`` (or ``<ms>``), each a u64."""
    ms, dash, seq = entry_id.partition("-")
    parts = [ms, seq] if dash else [ms]
    return all(p.isascii() and p.isdigit() and len(p) <= 20 and int(p) < 2**64 for p in parts)


def _pos(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Reader:
    key: str
    after: str
    done: asyncio.Future[list[StreamEvent]]


class StreamHub:
    def __init__(self, client: redis.asyncio.Redis, *, block_ms: int = 25, count: int = 256) -> None:
        self.r = client
        self.cluster = is_cluster(client)
        self.block_ms = block_ms
        self.count = count
        self._readers: dict[int, _Reader] = {}
        self._next = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def read(self, key: str, after: str = "0-0", timeout_s: float = 2.0) -> list[StreamEvent]:
        """The events of stream ``key`` after entry ``after``, or [] if none came within ``timeout_s``."""
        if not valid_position(after):  # never let one reader's position fail the read every reader shares
            raise ValueError(f"not a stream position: {after[:64]!r}")
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="ossfleet-stream-hub")
        token, self._next = self._next, self._next + 1
        reader = _Reader(key, after, loop.create_future())
        self._readers[token] = reader
        assert self._wake is not None
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(reader.done), timeout_s)
        except TimeoutError:
            return []
        finally:
            self._readers.pop(token, None)

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _xread(self, streams: dict[str, str]) -> list[Any]:
        if not self.cluster:
            reply: Any = await self.r.xread(streams, block=self.block_ms, count=self.count)  # type: ignore[arg-type]
            return list(reply or [])
        by_slot: dict[str, dict[str, str]] = {}
        for key, after in streams.items():
            by_slot.setdefault(key[: key.index("}") + 1], {})[key] = after
        replies: list[Any] = await asyncio.gather(
            *[self.r.xread(group, block=self.block_ms, count=self.count) for group in by_slot.values()]  # type: ignore[arg-type]
        )
        return [entry for reply in replies for entry in (reply or [])]

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._readers:
                self._wake.clear()
                await self._wake.wait()
                continue
            streams: dict[str, str] = {}
            for rd in self._readers.values():
                cur = streams.get(rd.key)
                if cur is None or _pos(rd.after) < _pos(cur):
                    streams[rd.key] = rd.after
            try:
                reply = await self._xread(streams)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away: every reader hears it, and the hub tries again
                log.warning("event=stream_hub_error error=%r", type(e).__name__)
                for rd in list(self._readers.values()):
                    if not rd.done.done():
                        rd.done.set_exception(e)
                await asyncio.sleep(0.2)
                continue
            got: dict[str, list[StreamEvent]] = {}
            for key, entries in reply or []:
                got[_s(key)] = [StreamEvent(_s(i), {_s(k): _s(v) for k, v in fields.items()}) for i, fields in entries]
            for rd in list(self._readers.values()):
                events = got.get(rd.key)
                if not events or rd.done.done():
                    continue
                if _pos(streams[rd.key]) > _pos(rd.after):
                    # This reader came while the read was under way, from further back than
                    # the read started: the events in between are not here. The next read has them.
                    continue
                mine = [e for e in events if _pos(e.entry_id) > _pos(rd.after)]
                if mine:
                    rd.done.set_result(mine)


class Relay:
    """A request's events as its caller reads them: from its stream, through the hub, deduplicated across
    retries; several choices merged; folded into outcomes. A reader that goes away before the end hands the
    unfinished requests to ``on_abandoned`` (the gateway cancels them). A labelled read from a request's start
    hands its end to ``observe`` (the gateway's comparison counters)."""

    def __init__(
        self,
        queue: RequestQueue,
        hub: StreamHub,
        on_abandoned: Callable[[str, str], None],
        observe: Callable[[Observation], None] | None = None,
    ) -> None:
        self.queue = queue
        self.hub = hub
        self.on_abandoned = on_abandoned
        self.observe = observe

    async def events(
        self,
        model: str,
        request_id: str,
        after: str = "0-0",
        labels: tuple[str, str] | None = None,
        role: str = "served",
    ) -> AsyncIterator[StreamEvent]:
        """The events of ``model``'s request (a model's name, or ``<model>:<adapter>``) from entry ``after``
        on, until its terminal event.

        A retried request (its replica died) streams again from its first
        token; events whose ``seq`` was already delivered are skipped, so a
        reader sees each chunk once. With ``labels`` (tenant, model) the
        stream's latencies and its end are recorded as metrics, and (read from its start) observed in
        ``role`` for the comparison.
        """
        delivered = -1
        last = time.monotonic()
        first = True
        observe = self.observe if labels is not None and after == "0-0" else None  # a read from the start
        started, first_s, last_s = last, None, None
        model = queue_model(model)
        key = self.queue.keys.stream(model, request_id)
        while True:
            batch = await self.hub.read(key, after, timeout_s=2.0)
            if not batch:
                state = await self.queue.state(model, request_id)
                if state is None:  # the request record expired (or never existed): nothing will come
                    raise RequestFailed(f"request {request_id} is no longer known")
                if state in ENDED and after != "0-0":
                    # Its terminal event was written with its end. A reader resuming past it has it all;
                    # otherwise it is in Redis (the hub's read may have timed out just as it came).
                    batch = await self.queue.read_stream(model, request_id, after, block_ms=None)
                    if not batch:
                        return
            for ev in batch:
                after = ev.entry_id
                if ev.type == "delta":
                    seq = int(ev.fields.get("seq", "0"))
                    if seq <= delivered:
                        continue
                    delivered = seq
                if labels is not None and role == "served":  # a shadow's wait in the batch band is no TTFT
                    last, first = _record(ev, labels, last, first)
                if observe is not None and labels is not None:
                    if ev.type == "delta":
                        last_s = time.monotonic() - started
                        first_s = last_s if first_s is None else first_s
                    elif ev.type in TERMINAL:
                        observe(observed(labels[0], labels[1], role, ev.fields, first_s, last_s))
                yield ev
                if ev.type in TERMINAL:
                    return

    async def merged_events(
        self,
        model: str,
        request_ids: Sequence[str],
        labels: tuple[str, str] | None = None,
        after: Sequence[str] | None = None,
    ) -> AsyncIterator[tuple[int, StreamEvent]]:
        """The events of several requests (the choices of one), each as (its index, event), as they come,
        each request's from its entry in ``after`` on; each request's own order is kept. An error reading
        one ends the whole iteration with it."""
        starts = list(after or ["0-0"] * len(request_ids))
        if len(request_ids) == 1:
            async for ev in self.events(model, request_ids[0], starts[0], labels=labels):
                yield 0, ev
            return
        q: asyncio.Queue[tuple[int, StreamEvent | None, BaseException | None]] = asyncio.Queue()

        async def pump(i: int, rid: str) -> None:
            try:
                async for ev in self.events(model, rid, starts[i], labels=labels):
                    await q.put((i, ev, None))
                await q.put((i, None, None))
            except Exception as e:
                await q.put((i, None, e))

        tasks = [asyncio.create_task(pump(i, rid)) for i, rid in enumerate(request_ids)]
        try:
            open_ = len(tasks)
            while open_:
                i, item, err = await q.get()
                if err is not None:
                    raise err
                if item is None:
                    open_ -= 1
                    continue
                yield i, item
        finally:
            for t in tasks:
                await cancel_and_wait(t)

    async def outcomes_or_cancel(
        self, tenant: str, request_ids: Sequence[str], model: str, cancel: bool = True
    ) -> list[Outcome]:
        """The finished requests (in order); if the caller goes away first, every one not finished is
        cancelled (unless not ``cancel``)."""
        outs = [Outcome() for _ in request_ids]
        done: set[int] = set()
        labels = (tenant, model)
        one = len(request_ids) == 1  # the common case reads its one stream directly
        events: AsyncIterator[tuple[int, StreamEvent]] = (
            ((0, ev) async for ev in self.events(model, request_ids[0], labels=labels))
            if one
            else self.merged_events(model, request_ids, labels)
        )
        try:
            async for i, ev in events:
                fold(outs[i], ev)
                if ev.type in TERMINAL:
                    done.add(i)
            return outs
        finally:
            for i, rid in enumerate(request_ids):
                if i not in done and cancel:
                    self.on_abandoned(tenant, rid)

    async def outcome(
        self, model: str, request_id: str, labels: tuple[str, str] | None = None, role: str = "served"
    ) -> Outcome:
        out = Outcome()
        async for ev in self.events(model, request_id, labels=labels, role=role):
            fold(out, ev)
        return out

    async def outcome_or_cancel(self, tenant: str, request_id: str, model: str) -> Outcome:
        """The finished request; if the caller goes away first, the request is cancelled."""
        return (await self.outcomes_or_cancel(tenant, [request_id], model))[0]


def _record(ev: StreamEvent, labels: tuple[str, str], last: float, first: bool) -> tuple[float, bool]:
    """Metrics for one delivered event: first-token and inter-token latency, the request's end."""
    tenant, model = labels
    now = time.monotonic()
    if ev.type == "delta":
        (metrics.time_to_first_token if first else metrics.inter_token)(model, now - last)
        return now, False
    if ev.type == "done":
        f = ev.fields
        metrics.finished(
            tenant,
            model,
            f.get("finish_reason", "stop"),
            int(f.get("cost_nusd", 0)) / NANO_PER_USD,
            int(f.get("output_tokens", 0)),
        )
    elif ev.type == "error":
        metrics.finished(tenant, model, "error", 0.0, 0)
    return last, first
