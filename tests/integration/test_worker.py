"""The replica loop on the real embedded Redis with the stub engine: drain, stop strings, cancels."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from transformers import AutoTokenizer

from ossfleet.config import PriceConfig
from ossfleet.control.admission import Admission
from ossfleet.control.queue import RequestQueue
from ossfleet.engine.stub import StubEngine
from ossfleet.harmony import SpecialIds
from ossfleet.protocol.work import WorkItem
from ossfleet.redisdb import connect_async
from ossfleet.replica.worker import ReplicaWorker


@pytest.fixture
def tok(tiny_checkpoint):
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


def stub(tok, delay: float = 0.0) -> StubEngine:
    ids = SpecialIds.of(tok)
    return StubEngine([ids.channel, *tok.encode("final", add_special_tokens=False), ids.message], ids.return_,
                      token_delay_s=delay, chunk=1)  # fmt: skip


def admission(rid: str, prompt: list[int], **fields) -> Admission:
    item = WorkItem(prompt, **{"max_tokens": 64, **fields})
    return Admission(rid, "t", "m", 1, item, len(prompt), 64, 1000,
                     10**12, "p", 10**6, 10**9)  # fmt: skip


async def wait_states(q: RequestQueue, ids: list[str], want: str, timeout: float = 20.0) -> list[str]:
    for _ in range(int(timeout / 0.05)):
        states = [(await q.request_state("m", i)).get("state", "") for i in ids]
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
    states = [await q.request_state("m", i) for i in ids]
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
    events = await q.read_stream("m", "s1")
    text = "".join(e.fields.get("text", "") for e in events if e.type == "delta")
    assert text == "Hello " and events[-1].fields["finish_reason"] == "stop"
    await w.drain()
    await client.aclose()
    await bell.aclose()


async def test_an_interactive_request_is_served_while_a_long_batch_line_keeps_generating(
    redis_server, namespace, tok, tiny_checkpoint
):
    """Through Redis and the real (tiny) engine: the scheduler runs both in the same steps."""
    from ossfleet.engine.batched import local_engine

    client, bell = connect_async(redis_server.url), connect_async(redis_server.url)
    q = RequestQueue(client, namespace, bands=3)
    engine = local_engine(str(tiny_checkpoint), [(0, 2)], max_batch_size=4, max_context=2048)
    await engine.start()
    w = ReplicaWorker(q, engine, tok, model="m", owner="w", price=PriceConfig(), bell_client=bell)
    w.start()
    line = admission("line", [5, 6, 7], raw=True, temperature=0, ignore_eos=True, max_tokens=1500)
    await q.admit(dataclasses.replace(line, band=2, max_tokens=1500))
    while not await q.read_stream("m", "line", block_ms=1000):  # until the batch line is generating (XREAD blocks)
        pass
    await q.admit(admission("chat", [8, 9, 10], raw=True, temperature=0, max_tokens=16))
    assert await wait_states(q, ["chat"], "done", timeout=120) == ["done"]
    # The chat finished while the batch line was still running: it did not wait for it.
    assert (await q.request_state("m", "line"))["state"] == "leased"
    chat = await q.read_stream("m", "chat")
    assert chat[-1].type == "done" and chat[-1].fields["finish_reason"] in ("stop", "length")
    assert await wait_states(q, ["line"], "done", timeout=240) == ["done"]
    events, after = [], "0-0"
    while not events or events[-1].type != "done":
        events += await q.read_stream("m", "line", after)
        after = events[-1].entry_id
    assert events[-1].fields["finish_reason"] == "length"  # ignore_eos: it ran to max_tokens
    await w.drain()
    await engine.stop()
    await client.aclose()
    await bell.aclose()


async def test_cluster_a_running_request_cancelled_stops_and_is_settled_in_its_tenants_slot(
    redis_cluster, namespace, tok
):
    # On a Redis Cluster: the cancel reaches the replica (pub/sub, or its lease renewal), which completes the
    # request with what it generated; the settlement runs in the tenant's slot and gives the rest back.
    client, bell = connect_async(redis_cluster.url), connect_async(redis_cluster.url)
    q = RequestQueue(client, namespace, bands=3, lease_s=3)
    assert q.cluster
    await q.admit(admission("c1", [20, 21, 22]))
    w = ReplicaWorker(q, stub(tok, delay=0.05), tok, model="m", owner="w", price=PriceConfig(), bell_client=bell)
    w.start()
    events = await q.read_stream("m", "c1", block_ms=20_000)  # the first token is out: it runs
    assert events and events[0].type == "delta"
    assert await q.cancel("c1", "t") == "cancelling"
    after, end = events[-1].entry_id, None
    while end is None:
        more = await q.read_stream("m", "c1", after, block_ms=20_000)
        assert more, "no event within 20 s"
        after = more[-1].entry_id
        end = next((e for e in more if e.type in ("done", "error")), None)
    assert end.type == "done" and end.fields["finish_reason"] == "cancelled"
    assert int(end.fields["output_tokens"]) < 64
    # The terminal event is written in the model's slot, the settlement follows in the tenant's: the
    # replica's task has made it once it ended (drain waits for it).
    await w.drain()
    budget = await client.hgetall(q.keys.budget("t", "p"))
    assert int(budget[b"reserved"]) == 0 and int(budget[b"spent"]) == int(end.fields["cost_nusd"])
    assert await client.zcard(q.keys.owed("m")) == 0
    await client.aclose()
    await bell.aclose()


async def test_the_load_is_read_on_a_thread_with_no_event_loop_as_serve_reads_it(redis_server, namespace, tok):
    """Ray Serve calls a replica's record_autoscaling_stats on a thread of its own: the worker's load must not
    need the event loop (it did: every call failed, "no running event loop", and the policy saw no replica)."""
    client, bell = connect_async(redis_server.url), connect_async(redis_server.url)
    q = RequestQueue(client, namespace, bands=3, lease_s=30)
    ids = [f"l{i}" for i in range(12)]
    for rid in ids:
        await q.admit(admission(rid, [20, 21, 22, 23]))
    w = ReplicaWorker(q, stub(tok), tok, model="m", owner="w", price=PriceConfig(), bell_client=bell)
    w.start()
    assert await wait_states(q, ids, "done") == ["done"] * 12
    load = await asyncio.to_thread(w.load)  # no running loop in that thread
    assert load.served == 12 and load.completions == 12 and load.service_s is not None
    await w.drain()
    for c in (client, bell):
        await c.aclose()
