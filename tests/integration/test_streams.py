"""The gateway's stream hub on a real embedded Redis: every reader gets every event after its position, once."""

from __future__ import annotations

import asyncio

import pytest

from ossfleet.control.keyspace import KeySpace
from ossfleet.control.streams import StreamHub
from ossfleet.redisdb import connect_async


@pytest.mark.parametrize("where", ["single", "cluster"])
async def test_many_readers_of_many_streams_each_get_their_events_in_order(where, request, namespace):
    # On a cluster the streams of three models live in three slots: the hub reads each slot's with its own XREAD.
    server = request.getfixturevalue("redis_server" if where == "single" else "redis_cluster")
    client = connect_async(server.url)
    hub = StreamHub(client, block_ms=20)
    ks = KeySpace(namespace)

    def key(rid: str) -> str:
        return ks.stream(f"m{int(rid[1:] or 0) % 3}", rid)

    async def reader(rid: str, n: int) -> list[str]:
        after, texts = "0-0", []
        while len(texts) < n:
            for ev in await hub.read(key(rid), after, timeout_s=5):
                after = ev.entry_id
                texts.append(ev.fields["text"])
        return texts

    async def writer(rid: str, n: int) -> None:
        for i in range(n):
            await client.xadd(key(rid), {"text": str(i)})
            await asyncio.sleep(0.001 * (i % 3))

    n, streams = 40, 50
    readers = [asyncio.create_task(reader(f"r{s}", n)) for s in range(streams)]
    # Two readers of one stream, one joining from the start while the other is far ahead.
    await asyncio.gather(*(writer(f"r{s}", n) for s in range(streams)))
    late = await reader("r0", n)
    results = await asyncio.gather(*readers)
    assert all(r == [str(i) for i in range(n)] for r in results)
    assert late == [str(i) for i in range(n)]
    assert await hub.read(key("n"), "0-0", timeout_s=0.1) == []
    await hub.close()
    await client.aclose()


async def test_a_reader_from_further_back_than_a_running_read_misses_nothing(redis_server, namespace):
    client = connect_async(redis_server.url)
    key = f"{{{namespace}}}:stream:x"
    hub = StreamHub(client, block_ms=500)
    ids = [await client.xadd(key, {"text": str(i)}) for i in range(5)]
    last = ids[-1].decode()
    ahead = asyncio.create_task(hub.read(key, last, timeout_s=5))  # blocks: nothing after the last entry
    await asyncio.sleep(0.1)
    behind = asyncio.create_task(hub.read(key, "0-0", timeout_s=5))  # joins during that blocking read
    await asyncio.sleep(0.05)
    await client.xadd(key, {"text": "5"})
    assert [e.fields["text"] for e in await ahead] == ["5"]
    assert [e.fields["text"] for e in await behind] == [str(i) for i in range(6)]
    await hub.close()
    await client.aclose()


async def test_hardening_a_reader_position_redis_cannot_parse_fails_that_reader_alone(redis_server, namespace):
    """#33 finding 2: a Last-Event-ID above 2^64 failed the one XREAD every relayed stream shares."""
    from ossfleet.errors import InvalidRequest
    from ossfleet.protocol.events import stream_position

    client = connect_async(redis_server.url)
    hub = StreamHub(client, block_ms=20)
    key = KeySpace(namespace).stream("m", "r1")
    await client.xadd(key, {"text": "a"})
    for bad in ("99999999999999999999-0", "18446744073709551616-0", "1-x", "-1-0", "", "\u0661-0"):
        with pytest.raises(InvalidRequest, match="at most 2"):
            stream_position(bad, "cursor")
        with pytest.raises(ValueError, match="not a stream position"):
            await hub.read(key, bad, timeout_s=1)
    assert stream_position("18446744073709551615-18446744073709551615", "cursor")
    # Another reader, at the same time as a bad one, reads on.
    good = asyncio.create_task(hub.read(key, "0-0", timeout_s=5))
    with pytest.raises(ValueError):
        await hub.read(key, "99999999999999999999-0", timeout_s=1)
    events = await good
    assert [e.fields["text"] for e in events] == ["a"]
    await hub.close()
    await client.aclose()
