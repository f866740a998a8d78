"""hardening: deleting a tenant removes what it left (ledger, files, responses, adapters, batch jobs and its storage
folder) and nothing of any other tenant, on a single Redis and on a Redis Cluster."""

from __future__ import annotations

import json
import time

import pytest

from ossfleet.adapters.format import AdapterInfo
from ossfleet.adapters.store import AdapterStore
from ossfleet.batch.store import FileRecord, Job, JobStore
from ossfleet.control.keyspace import KeySpace
from ossfleet.control.tenant_purge import outstanding, purge_tenant
from ossfleet.redisdb import connect_async
from ossfleet.storage import FileStorage

INFO = AdapterInfo(rank=2, alpha=4.0, scale=2.0, modules=("q_proj",), layers=(0,), nbytes=3, base_model="m")


async def leave_traces(r, ks: KeySpace, storage: FileStorage, tenant: str) -> None:
    """What a tenant accumulates: spend and reservations in its slot, a file, a stored response, an adapter,
    an ended batch job with results."""
    await r.hset(ks.budget(tenant, "2026-12"), mapping={"spent": 500, "reserved": 0})
    await r.hset(ks.usage(tenant, "2026-12"), mapping={"m:requests": 3})
    await r.set(ks.idem(tenant, "k1"), "req1")
    await r.hset(ks.resv(tenant, "req1"), mapping={"settled": 1})
    path = storage.path(tenant, "files/file-1")
    storage.put(path, b"{}\n")
    jobs = JobStore(r, ks.namespace)
    await jobs.add_file(FileRecord(f"file-{tenant}", tenant, "in.jsonl", "batch", 3, int(time.time()), path))
    await r.set(ks.response(f"r-{tenant}"), json.dumps({"tenant": tenant}))
    await r.zadd(ks.responses(tenant), {f"r-{tenant}": time.time() + 60})
    await AdapterStore(r, ks.namespace, storage).put(tenant, "m", "bot", b"{}", b"abc", INFO)
    now = int(time.time())
    await jobs.create(Job(f"batch-{tenant}", tenant, "completed", "queue", "/v1/chat/completions", "f", "24h", now,
                          now + 60), active=False)  # fmt: skip
    await r.hset(ks.batch_results(f"batch-{tenant}"), mapping={"0": "x"})


async def keys_of(r, ks: KeySpace) -> set[str]:
    out = set()
    for pattern in ks.patterns():
        out |= {k.decode() if isinstance(k, bytes) else k async for k in r.scan_iter(match=pattern, count=1000)}
    return out


@pytest.mark.parametrize("server", ["redis_server", "redis_cluster"])
async def test_hardening_tenant_purge_removes_everything_of_that_tenant_only(server, namespace, tmp_path, request):
    r = connect_async(request.getfixturevalue(server).url)
    ks = KeySpace(namespace)
    storage = FileStorage(str(tmp_path / "files"))
    # "a" and "ab": a prefix of a name, and a name with glob characters, must not be swept with it.
    for t in ("a", "ab", "a*"):
        await leave_traces(r, ks, storage, t)
    before = await keys_of(r, ks)
    assert any("{" + namespace + ":t:a}" in k for k in before)

    assert await outstanding(r, ks, "a") == []
    report = await purge_tenant(r, ks, "a", storage)
    assert report.as_dict() == {"files": 1, "responses": 1, "adapters": 1, "batches": 1, "ledger_keys": 4}
    after = await keys_of(r, ks)
    gone = before - after
    assert all(k.startswith("{" + namespace + ":t:a}") or k.endswith((":a", "-a", ":a:m:bot")) for k in gone), gone
    assert not any("{" + namespace + ":t:a}" in k for k in after)
    assert not (tmp_path / "files" / "a").exists()
    # The others are whole.
    for t in ("ab", "a*"):
        assert await r.hget(ks.budget(t, "2026-12"), "spent") is not None
        assert await r.exists(ks.file(f"file-{t}"), ks.response(f"r-{t}"), ks.adapter(t, "m", "bot"),
                              ks.batch(f"batch-{t}")) == 4  # fmt: skip
        assert (tmp_path / "files" / t).exists()
    await r.aclose()


async def test_hardening_tenant_with_reserved_money_or_a_running_batch_is_outstanding(redis_server, namespace):
    r = connect_async(redis_server.url)
    ks = KeySpace(namespace)
    await r.hset(ks.budget("busy", "2026-12"), mapping={"spent": 0, "reserved": 2_500_000})
    now = int(time.time())
    await JobStore(r, namespace).create(Job("batch-1", "busy", "in_progress", "dedicated", "/v1/chat/completions",
                                            "f", "24h", now, now + 60), active=True)  # fmt: skip
    reasons = await outstanding(r, ks, "busy")
    assert len(reasons) == 2 and "0.002500 USD reserved" in reasons[0] and "batch-1" in reasons[1]
    assert await outstanding(r, ks, "idle") == []
    await r.aclose()
