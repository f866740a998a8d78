"""A replica serving adapters from an LRU of one, on the real embedded Redis and the real engine: requests of
two adapters and the base model, interleaved, each get their PEFT-merged model's tokens and pay the
adapters' surcharge; the replica never holds more than its LRU allows."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ossfleet.config import PriceConfig
from ossfleet.control.admission import Admission
from ossfleet.control.queue import RequestQueue
from ossfleet.engine.batched import local_engine
from ossfleet.protocol.work import AdapterRef, WorkItem
from ossfleet.redisdb import connect_async
from ossfleet.replica.worker import ReplicaWorker
from ossfleet.storage import FileStorage

PROMPT = [5, 6, 7, 8, 9]


def reference(checkpoint, adapter=None) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model.generate(torch.tensor([PROMPT]), max_new_tokens=8, do_sample=False)[0, len(PROMPT) :].tolist()


async def test_an_lru_of_one_serves_two_adapters_and_the_base_interleaved(
    redis_server, namespace, tiny_checkpoint, tmp_path
):
    from ossfleet.tinymodel import make_tiny_adapter

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    folders = {n: make_tiny_adapter(tiny_checkpoint, tmp_path / n, seed=i + 3, alpha=2) for i, n in enumerate("ab")}
    want = {n: tok.decode(reference(tiny_checkpoint, f), skip_special_tokens=True) for n, f in folders.items()}
    want[None] = tok.decode(reference(tiny_checkpoint), skip_special_tokens=True)
    assert len(set(want.values())) == 3

    client, bell = connect_async(redis_server.url), connect_async(redis_server.url)
    q = RequestQueue(client, namespace, bands=3)
    engine = local_engine(str(tiny_checkpoint), [(0, 2)], max_batch_size=4, max_context=256)
    await engine.start()
    w = ReplicaWorker(q, engine, tok, model="m", owner="w", price=PriceConfig(), bell_client=bell,
                      storage=FileStorage(str(tmp_path)), max_adapters=1,
                      adapter_surcharge=PriceConfig(input_per_1k=1.0))  # fmt: skip
    held_most = 0
    try:
        jobs = [("a", 0), ("b", 1), (None, 2), ("a", 3), ("b", 4), ("a", 5), (None, 6), ("b", 7)]
        for name, i in jobs:
            key = "" if name is None else f"t/m:{name}@0"
            ref = None if name is None else AdapterRef(key, str(folders[name]))
            item = WorkItem(PROMPT, 8, temperature=0, raw=True, adapter=ref)
            await q.admit(Admission(f"r{i}", "t", "m", 1, item, len(PROMPT), 8, 10**9, 10**12, "p", 10**6, 10**9,
                                    adapter=key, usage_name=f"m:{name}" if name else ""))  # fmt: skip
        w.start()
        texts = {}
        for name, i in jobs:
            events, after = [], "0-0"
            while not events or events[-1].type not in ("done", "error"):
                events += await q.read_stream("m", f"r{i}", after)
                if events:
                    after = events[-1].entry_id
                held_most = max(held_most, len(w.adapters.held()))
            assert events[-1].type == "done", events[-1].fields
            texts[i] = "".join(e.fields.get("text", "") for e in events if e.type == "delta")
            cost = int(events[-1].fields["cost_nusd"])
            assert (cost > 0) == (name is not None), (name, cost)  # only adapter requests pay the surcharge
        for name, i in jobs:
            assert texts[i] == want[name], (name, i)
        assert held_most == 1 and w.adapters.loads >= 2
        usage = {k.decode(): int(v) for k, v in (await client.hgetall(q.keys.usage("t", "p"))).items()}
        assert usage["m:a:requests"] == 3 and usage["m:b:requests"] == 3 and usage["m:requests"] == 2
    finally:
        await w.drain()
        await engine.stop()
        await client.aclose()
        await bell.aclose()


async def test_a_deleted_adapter_fails_its_request_with_the_reason(redis_server, namespace, tiny_checkpoint, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    client, bell = connect_async(redis_server.url), connect_async(redis_server.url)
    q = RequestQueue(client, namespace, bands=3)
    engine = local_engine(str(tiny_checkpoint), [(0, 2)], max_batch_size=2, max_context=256)
    await engine.start()
    w = ReplicaWorker(q, engine, tok, model="m", owner="w", price=PriceConfig(), bell_client=bell,
                      storage=FileStorage(str(tmp_path)), max_adapters=2)  # fmt: skip
    try:
        item = WorkItem(PROMPT, 4, adapter=AdapterRef("t/m:gone@0", str(tmp_path / "x")))
        await q.admit(Admission("g", "t", "m", 1, item, len(PROMPT), 4, 10**9, 10**12, "p", 10**6, 10**9,
                                adapter="t/m:gone@0"))  # fmt: skip
        w.start()
        events: list = []
        while not events or events[-1].type not in ("done", "error"):
            events = await q.read_stream("m", "g")
        assert events[-1].type == "error" and "deleted" in events[-1].fields["error"]
        assert w.adapters.held() == ()  # nothing half-loaded stays
    finally:
        await w.drain()
        await engine.stop()
        await client.aclose()
        await bell.aclose()
