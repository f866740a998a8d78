"""Redis restarted (embedded, AOF) while requests wait: they are all still there and all served."""

from __future__ import annotations

import asyncio

from ossfleet.config import PriceConfig
from ossfleet.control.admission import Admission
from ossfleet.control.queue import RequestQueue
from ossfleet.engine.stub import StubEngine
from ossfleet.harmony import SpecialIds
from ossfleet.protocol.work import WorkItem
from ossfleet.redisdb import EmbeddedRedis, connect_async
from ossfleet.replica.worker import ReplicaWorker


def test_waiting_requests_survive_a_redis_restart_and_are_served(tmp_path, tiny_checkpoint):
    from transformers import AutoTokenizer

    data = tmp_path / "redis"
    n = 25
    server = EmbeddedRedis(data).start()
    port = server.port

    async def admit_all() -> None:
        client = connect_async(server.url)
        q = RequestQueue(client, "fault", bands=3)
        for i in range(n):
            await q.admit(Admission(f"w{i}", f"t{i % 3}", "m", i % 3, WorkItem([10, 11], 8), 2, 8,
                                    100, 10**12, "p", 10**6, 10**9))  # fmt: skip
        await client.aclose()

    asyncio.run(admit_all())
    server.stop()  # SHUTDOWN: the append-only file is flushed
    server = EmbeddedRedis(data, port=port).start()
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    ids = SpecialIds.of(tok)

    async def serve_all() -> tuple[tuple[int, ...], list[str]]:
        client, bell = connect_async(server.url), connect_async(server.url)
        q = RequestQueue(client, "fault", bands=3)
        depth = (await q.depth("m")).waiting
        engine = StubEngine([ids.channel, *tok.encode("final", add_special_tokens=False), ids.message], ids.return_)
        worker = ReplicaWorker(q, engine, tok, model="m", owner="r1", price=PriceConfig(), bell_client=bell,
                               reap_every_s=0.2)  # fmt: skip
        worker.start()
        for _ in range(100):
            states = [(await q.request_state("m", f"w{i}")).get("state", "") for i in range(n)]
            if states.count("done") == n:
                break
            await asyncio.sleep(0.1)
        await worker.drain(grace_s=1)
        await client.aclose()
        await bell.aclose()
        return depth, states

    try:
        depth, states = asyncio.run(serve_all())
    finally:
        server.stop()
    assert sum(depth) == n  # every waiting request was still queued after the restart
    assert states.count("done") == n
