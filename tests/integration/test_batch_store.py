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


@pytest.mark.parametrize("server", ["redis_server", "redis_cluster"])
async def test_hardening_dedicated_lines_reserve_before_running_and_spend_never_passes_the_budget(
    server, namespace, request
):
    client = connect_async(request.getfixturevalue(server).url)
    s = JobStore(client, namespace)
    await s.create(job(mode="dedicated"), active=True)
    budget = s.keys.budget("acme", "2026-12")

    async def money() -> tuple[int, int]:
        reserved, spent = await client.hmget(budget, "reserved", "spent")
        return int(reserved or 0), int(spent or 0)

    # A limit of 1000: two lines of at most 400 fit, a third does not (it would not run).
    assert await s.reserve("acme", "batch_1", 0, 400, "2026-12", 1000)
    assert await s.reserve("acme", "batch_1", 1, 400, "2026-12", 1000)
    assert not await s.reserve("acme", "batch_1", 2, 400, "2026-12", 1000)
    assert await s.reserve("acme", "batch_1", 1, 400, "2026-12", 1000)  # a redone line: reserved once
    assert await money() == (800, 0)
    # Line 0 is recorded: charged what it cost, its reservation released, in one step (twice: once).
    charge = ("acme", "2026-12", "gpt-oss-20b", 7, 3, 250)
    assert await s.record("batch_1", 0, True, "{}", charge=charge, reserved_by="acme")
    assert not await s.record("batch_1", 0, True, "{}", charge=charge, reserved_by="acme")
    assert await money() == (400, 250)
    # Now a third line fits (250 + 400 + 300 <= 1000); a failed line is released and not charged.
    assert await s.reserve("acme", "batch_1", 2, 300, "2026-12", 1000)
    assert await s.record("batch_1", 2, False, "{}", reserved_by="acme")
    assert await money() == (400, 250)
    # The job stops with line 1 run but never recorded: the end of its run releases it.
    assert await s.release_job("acme", "batch_1") == 400
    assert await money() == (0, 250) and await s.release_job("acme", "batch_1") == 0
    # No limit (-1): reserved all the same, so that recording releases it.
    assert await s.reserve("acme", "batch_1", 3, 10**12, "2026-12", -1)
    assert await s.record("batch_1", 3, True, "{}", charge=("acme", "2026-12", "m", 1, 1, 5), reserved_by="acme")
    assert await money() == (0, 255)
    await client.aclose()
