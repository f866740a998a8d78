"""Shadow traffic through the real gateway core and queue (embedded Redis), on stub replicas in one process:
what a shadow is admitted as, when, what is paired, and which requests are counted."""

from __future__ import annotations

import pytest
import redis
from transformers import AutoTokenizer

from ossfleet.chatformat import ChatFormat
from ossfleet.config import parse_config
from ossfleet.control.gateway import GatewayCore
from ossfleet.engine.factory import build_engine
from ossfleet.harmony import Message
from ossfleet.protocol.chat import ChatRequest
from ossfleet.protocol.work import WorkItem
from ossfleet.redisdb import connect_async
from ossfleet.replica.worker import ReplicaWorker

PRICE = {"input_per_1k": 0.001, "output_per_1k": 0.002}


def config(ckpt, namespace: str, files) -> dict:
    model = {"path": str(ckpt), "engine": "stub", "max_batch_size": 4, "price": PRICE}
    return {
        "redis": {"namespace": namespace},
        "batch": {"storage_url": str(files), "discount": 0.4},
        "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", **model},
                   {"name": "gpt-oss-120b", "spec": "gpt-oss-120b", **model}],
        "tenants": [{"name": "acme", "budget": {"limit_usd": 100},
                     "shadows": {"gpt-oss-20b": {"model": "gpt-oss-120b", "fraction": 1.0}}}],
    }  # fmt: skip


async def test_a_shadow_runs_after_its_primary_as_a_discounted_batch_line_and_is_paired(
    tiny_checkpoint, redis_server, namespace, tmp_path
):
    cfg = parse_config(config(tiny_checkpoint, namespace, tmp_path / "files"), "<shadow>")
    core = GatewayCore(cfg, redis_server.url)
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    workers = []
    for m in cfg.models:
        engine = await build_engine(cfg, m, tok)
        w = ReplicaWorker(core.queue, engine, tok, model=m.name, owner=f"{m.name}-w", price=m.price,
                          bell_client=connect_async(redis_server.url), fmt=ChatFormat.of(tok))  # fmt: skip
        w.start()
        workers.append(w)
    t = cfg.tenants[0]
    ask = ChatRequest(model="gpt-oss-20b", messages=(Message("user", "hi"),), max_tokens=8, n=2)
    try:
        sub = await core.submit(t, ask)
        outs = await core.relay.outcomes_or_cancel(t.name, list(sub.request_ids), sub.model_name)
        await core.settle()
        c = await core.comparisons.read(t.name, 1, 10)
        (pair,) = c["pairs"]
        assert pair["request_id"] == sub.request_id and pair["primary"]["content"] == outs[0].content
        shadow = await core.queue.request_state("gpt-oss-120b", pair["shadow"]["request_id"])
        primary = await core.queue.request_state("gpt-oss-20b", sub.request_id)
        # One shadow for the request (its first choice), in the lowest band, after the primary, at the discount.
        assert int(shadow["band"]) == len(cfg.priorities.bands) - 1 and int(primary["band"]) < int(shadow["band"])
        assert float(shadow["enq_ms"]) >= float(primary["enq_ms"]) and shadow["state"] == "done"
        item = WorkItem.decode(shadow["payload"])
        assert item.discount == 0.4 and item.max_tokens == 8
        undiscounted = (int(shadow["in_tokens"]) * 0.001 + pair["shadow"]["output_tokens"] * 0.002) / 1000
        assert abs(pair["shadow"]["cost_usd"] - undiscounted * 0.6) < 1e-12
        roles = {(m["model"], m["role"]): m for m in c["models"]}
        assert roles["gpt-oss-20b", "served"]["requests"] == 2  # both choices, as the client read them
        assert roles["gpt-oss-120b", "shadow"]["requests"] == 1

        # Not shadowed: a batch line, and a duplicate of an admitted request (the same idempotency key).
        again = ChatRequest(model="gpt-oss-20b", messages=(Message("user", "hi"),), max_tokens=4, idempotency_key="k")
        first = await core.submit(t, again)
        dup = await core.submit(t, again)
        assert dup.duplicate and dup.request_id == first.request_id
        line = ChatRequest(model="gpt-oss-20b", messages=(Message("user", "hi"),), max_tokens=4, batch=True)
        batch = await core.submit(t, line)
        await core.relay.outcome(batch.model_name, batch.request_id)
        # Read once from its start (counted) and once resumed past its first entry (not counted again).
        events = [e async for e in core.relay.events(first.model_name, first.request_id, labels=(t.name, "m"))]
        async for _ in core.relay.events(first.model_name, first.request_id, events[0].entry_id, (t.name, "m")):
            pass
        await core.settle()
        c = await core.comparisons.read(t.name, 1, 10)
        assert len(c["pairs"]) == 2  # the first request's and the idempotent one's, once
        roles = {(m["model"], m["role"]): m["requests"] for m in c["models"]}
        assert roles == {("gpt-oss-20b", "served"): 2, ("m", "served"): 1, ("gpt-oss-120b", "shadow"): 2}
    finally:
        for w in workers:
            await w.drain(1.0)
            await w.engine.stop()
        await core.close()


async def test_comparison_counts_are_added_in_memory_and_written_by_a_flush_kept_when_redis_refuses(
    redis_server, namespace
):
    from ossfleet.control.comparison import Observation
    from ossfleet.control.comparison_store import ComparisonStore
    from ossfleet.control.keyspace import KeySpace

    r = connect_async(redis_server.url)
    store = ComparisonStore(r, KeySpace(namespace), flush_every_s=3600)  # flushed by the test only
    try:
        for _ in range(3):
            store.add(Observation("acme", "m", "served", "stop", 5, 100, 0.01, 0.0, 0.001))
        assert (await store.read("acme", 1, 0))["models"] == []  # nothing written before a flush
        await store.flush()
        (m,) = (await store.read("acme", 1, 0))["models"]
        assert (m["requests"], m["output_tokens"], m["ttft_s"]["count"]) == (3, 15, 3)
        # A flush Redis refuses keeps its counts for the next one.
        broken = ComparisonStore(connect_async("redis://127.0.0.1:1"), KeySpace(namespace), flush_every_s=3600)
        broken.add(Observation("acme", "m", "served", "length", 7, 100))
        with pytest.raises(redis.exceptions.ConnectionError):
            await broken.flush()
        gone, broken.r = broken.r, r  # Redis is back
        await broken.flush()
        (m,) = (await store.read("acme", 1, 0))["models"]
        assert (m["requests"], m["finish_reasons"]) == (4, {"stop": 3, "length": 1})
        await gone.aclose()
    finally:
        await store.close()
        await r.aclose()
