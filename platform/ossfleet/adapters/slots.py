"""A replica's LoRA adapters: at most N loaded, least recently used evicted, never one in use.

Each request that names an adapter pins it for its lifetime (``acquire`` /
``release``). A missing adapter is loaded on demand; when the replica already
holds N, the least recently used one that no running request pins is unloaded
first. Loads run one at a time; requests for an adapter that is loading wait
for that load rather than starting another.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class _Entry:
    pins: int
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class AdapterSlots:
    def __init__(
        self,
        capacity: int,
        load: Callable[[str], Awaitable[None]],
        unload: Callable[[str], Awaitable[None]],
    ) -> None:
        if capacity < 1:
            raise ValueError("an adapter LRU needs room for at least one adapter")
        self.capacity = capacity
        self._load, self._unload = load, unload
        self._held: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._lock = asyncio.Lock()
        self._freed = asyncio.Event()
        self.loads = 0  # cold loads so far
        self.load_s = 0.0  # seconds they took

    def held(self) -> tuple[str, ...]:
        return tuple(self._held)

    def can_load(self) -> bool:
        """Whether one more adapter could come in now (room, or one held that nothing uses)."""
        return len(self._held) < self.capacity or any(e.pins == 0 for e in self._held.values())

    def in_use(self) -> int:
        return sum(1 for e in self._held.values() if e.pins)

    async def acquire(self, key: str) -> None:
        """Pin ``key`` for a request, loading it first if this replica does not hold it."""
        while True:
            entry = self._held.get(key)
            if entry is not None:
                entry.pins += 1
                self._held.move_to_end(key)
                try:
                    await asyncio.shield(entry.ready)
                except BaseException:
                    self.release(key)
                    raise
                return
            async with self._lock:
                if key in self._held:
                    continue  # loaded while we waited for the lock
                while len(self._held) >= self.capacity:
                    victim = next((k for k, e in self._held.items() if e.pins == 0), None)
                    if victim is None:  # every slot in use: wait for a request to finish
                        self._freed.clear()
                        await self._freed.wait()
                        continue
                    del self._held[victim]
                    await self._unload(victim)
                entry = self._held[key] = _Entry(pins=1)
                loop = asyncio.get_running_loop()
                started = loop.time()
                try:
                    await self._load(key)
                except BaseException as e:
                    del self._held[key]
                    entry.ready.set_exception(e if isinstance(e, Exception) else RuntimeError("adapter load cancelled"))
                    entry.ready.exception()  # waiters re-raise it; nobody else need retrieve it
                    self._freed.set()
                    raise
                self.loads += 1
                self.load_s += loop.time() - started
                entry.ready.set_result(None)
                return

    def release(self, key: str) -> None:
        entry = self._held.get(key)
        if entry is not None and entry.pins > 0:
            entry.pins -= 1
            if entry.pins == 0:
                self._freed.set()
