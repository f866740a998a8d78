"""A replica's adapter LRU: N held, least recently used evicted, never one a running request pins."""

from __future__ import annotations

import asyncio

import pytest

from ossfleet.adapters.slots import AdapterSlots


def slots(capacity, fail=()):
    events: list[str] = []
    gates: dict[str, asyncio.Event] = {}

    async def load(key):
        events.append(f"load {key}")
        if key in gates:
            await gates[key].wait()
        if key in fail:
            raise FileNotFoundError(key)

    async def unload(key):
        events.append(f"unload {key}")

    return AdapterSlots(capacity, load, unload), events, gates


async def test_the_least_recently_used_unpinned_adapter_is_evicted():
    s, events, _ = slots(2)
    await s.acquire("a")
    await s.acquire("b")
    s.release("a")
    s.release("b")
    await s.acquire("a")  # a is now the most recently used
    s.release("a")
    await s.acquire("c")
    assert events == ["load a", "load b", "unload b", "load c"]
    assert set(s.held()) == {"a", "c"} and s.loads == 3


async def test_a_pinned_adapter_is_never_evicted_and_a_load_waits_for_a_free_slot():
    s, events, _ = slots(1)
    await s.acquire("a")
    assert not s.can_load()
    waiter = asyncio.create_task(s.acquire("b"))
    await asyncio.sleep(0)
    assert not waiter.done() and events == ["load a"]
    s.release("a")
    await waiter
    assert events == ["load a", "unload a", "load b"] and s.held() == ("b",)


async def test_concurrent_requests_for_one_adapter_load_it_once():
    s, events, gates = slots(2)
    gates["a"] = asyncio.Event()
    first = asyncio.create_task(s.acquire("a"))
    await asyncio.sleep(0)
    second = asyncio.create_task(s.acquire("a"))
    await asyncio.sleep(0)
    assert not second.done()
    gates["a"].set()
    await asyncio.gather(first, second)
    assert events == ["load a"] and s.in_use() == 1 and s.loads == 1


async def test_a_failed_load_holds_nothing_and_fails_every_waiter():
    s, _, gates = slots(1, fail=("gone",))
    gates["gone"] = asyncio.Event()
    first = asyncio.create_task(s.acquire("gone"))
    await asyncio.sleep(0)
    second = asyncio.create_task(s.acquire("gone"))
    await asyncio.sleep(0)
    gates["gone"].set()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(r, FileNotFoundError) for r in results)
    assert s.held() == () and s.can_load()
    await s.acquire("a")  # the slot is free for the next adapter
    assert s.held() == ("a",)


def test_an_lru_needs_room():
    with pytest.raises(ValueError, match="at least one"):
        AdapterSlots(0, None, None)  # type: ignore[arg-type]
