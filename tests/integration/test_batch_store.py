"""Batch job records on a real embedded Redis: owner-only reads, results recorded once, transitions."""

from __future__ import annotations

import asyncio

import pytest

from ossfleet.batch.store import FileRecord, Job, JobStore
from ossfleet.errors import NotFound
from ossfleet.redisdb import connect_async


@pytest.fixture
async def store(redis_server, namespace):
    client = connect_async(redis_server.url)
    yield JobStore(client, namespace)
    await client.aclose()


def job(jid: str = "batch_1", tenant: str = "acme", **kw) -> Job:
    base = dict(id=jid, tenant=tenant, status="in_progress", mode="queue", endpoint="/v1/chat/completions",
                input_file_id="file-1", completion_window="24h", created_at=1000, expires_at=90_000,
                total=10)  # fmt: skip
    return Job(**{**base, **kw})


async def test_a_job_is_its_owners_alone(store):
    await store.create(job(), active=True)
    assert (await store.get("acme", "batch_1")).total == 10
    with pytest.raises(NotFound):
        await store.get("globex", "batch_1")
    assert await store.jobs("globex") == ([], False)
    assert [j.id for j in (await store.jobs("acme"))[0]] == ["batch_1"]
    await store.add_file(FileRecord("file-1", "acme", "in.jsonl", "batch", 10, 1000, "/x/in.jsonl"))
    with pytest.raises(NotFound):
        await store.file("globex", "file-1")
    with pytest.raises(NotFound):
        await store.delete_file("globex", "file-1")
    assert (await store.file("acme", "file-1")).bytes == 10


async def test_concurrent_records_of_one_line_count_and_charge_once(store):
    await store.create(job(), active=True)
    charge = ("acme", "2026-11", "gpt-oss-20b", 7, 3, 1234)
    results = await asyncio.gather(
        *(store.record("batch_1", 4, True, f'{{"n": {i}}}', charge=charge) for i in range(20))
    )
    assert sum(results) == 1
    j = await store.load("batch_1")
    assert j is not None and j.completed == 1 and j.failed == 0
    spent = await store.r.hget(store.keys.budget("acme", "2026-11"), "spent")
    usage = await store.r.hgetall(store.keys.usage("acme", "2026-11"))
    assert int(spent) == 1234
    assert int(usage[b"gpt-oss-20b:requests"]) == 1 and int(usage[b"gpt-oss-20b:output_tokens"]) == 3
    # A queue-mode line (charged when its request completed) is recorded without a second charge.
    assert await store.record("batch_1", 5, False, '{"e": 1}')
    assert int(await store.r.hget(store.keys.budget("acme", "2026-11"), "spent")) == 1234
    assert [(i, ok) for i, ok, _ in await store.results("batch_1")] == [(4, True), (5, False)]


async def test_transitions_only_from_allowed_states_and_terminal_leaves_the_active_set(store):
    await store.create(job(), active=True)
    assert await store.active() == ["batch_1"]
    assert not await store.transition("batch_1", "completed", ("finalizing",))
    assert await store.transition("batch_1", "cancelling", ("validating", "in_progress"))
    assert not await store.transition("batch_1", "cancelling", ("validating", "in_progress"))
    assert await store.transition("batch_1", "finalizing", ("in_progress", "cancelling"))
    assert await store.transition("batch_1", "cancelled", ("finalizing",))
    j = await store.load("batch_1")
    assert j is not None and j.status == "cancelled" and {"cancelling_at", "cancelled_at"} <= set(j.stamps)
    assert await store.active() == []
