"""Every open request stream of one gateway process, read with one XREAD.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ossfleet.queue import StreamEvent, _s, is_cluster
from ossfleet.tasks import cancel_and_wait

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger("ossfleet.streams")


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
