"""The replica loop on the real embedded Redis with the stub engine: drain, stop strings, cancels."""

from __future__ import annotations

import asyncio

import pytest
from transformers import AutoTokenizer

from ossfleet.config import PriceConfig
from ossfleet.engine.stub import StubEngine
from ossfleet.harmony import SpecialIds
from ossfleet.queue import Admission, RequestQueue
from ossfleet.redisdb import connect_async
from ossfleet.worker import ReplicaWorker


@pytest.fixture
def tok(tiny_checkpoint):
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


def stub(tok, delay: float = 0.0) -> StubEngine:
    ids = SpecialIds.of(tok)
    return StubEngine([ids.channel, *tok.encode("final", add_special_tokens=False), ids.message], ids.return_,
                      token_delay_s=delay, chunk=1)  # fmt: skip


def admission(rid: str, prompt: list[int], **payload) -> Admission:
    return Admission(rid, "t", "m", 1, {"prompt": prompt, "max_tokens": 64, **payload}, len(prompt), 64, 1000,
                     10**12, "p", 10**6, 10**9)  # fmt: skip


async def wait_states(q: RequestQueue, ids: list[str], want: str, timeout: float = 20.0) -> list[str]:
    for _ in range(int(timeout / 0.05)):
        states = [(await q.request_state(i)).get("state", "") for i in ids]
        if all(s == want for s in states):
            return states
        await asyncio.sleep(0.05)
    return states


async def test_a_draining_replica_hands_back_what_it_holds_and_another_serves_it(redis_server, namespace, tok):
    client, bell1, bell2 = (connect_async(redis_server.url) for _ in range(3))
    q = RequestQueue(client, namespace, bands=3, lease_s=30)
    ids = [f"d{i}" for i in range(4)]
    for rid in ids:
        await q.admit(admission(rid, [20, 21, 22, 23]))
    slow = ReplicaWorker(q, stub(tok, delay=0.5), tok, model="m", owner="slow", price=PriceConfig(), bell_client=bell1)
    slow.start()
    assert await wait_states(q, ids, "leased") == ["leased"] * 4
    await slow.drain(grace_s=0.2)  # too short to finish: everything is handed back
    states = [await q.request_state(i) for i in ids]
    assert [s["state"] for s in states] == ["queued"] * 4
    assert [s["attempts"] for s in states] == ["0"] * 4  # a hand-back is not an attempt
    fast = ReplicaWorker(q, stub(tok), tok, model="m", owner="fast", price=PriceConfig(), bell_client=bell2)
    fast.start()
    assert await wait_states(q, ids, "done") == ["done"] * 4
    await fast.drain()
    for c in (client, bell1, bell2):
        await c.aclose()


async def test_stop_string_cuts_the_answer_and_finishes_the_request(redis_server, namespace, tok):
    client, bell = connect_async(redis_server.url), connect_async(redis_server.url)
    q = RequestQueue(client, namespace, bands=3)
    prompt = tok.encode("Hello there friend", add_special_tokens=False)
    await q.admit(admission("s1", prompt, stop=["there"]))
    w = ReplicaWorker(q, stub(tok), tok, model="m", owner="w", price=PriceConfig(), bell_client=bell)
    w.start()
    assert await wait_states(q, ["s1"], "done") == ["done"]
    events = await q.read_stream("s1")
    text = "".join(e.fields.get("text", "") for e in events if e.type == "delta")
    assert text == "Hello " and events[-1].fields["finish_reason"] == "stop"
    await w.drain()
    await client.aclose()
    await bell.aclose()
