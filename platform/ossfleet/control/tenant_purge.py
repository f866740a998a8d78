"""Deleting a tenant removes what it left behind, so that a new tenant of the same name starts empty.

A tenant's data lives under its name: its slot in Redis (budgets, usage, reservations, rate windows,
idempotency keys), its files, stored responses, adapters and batch jobs (records in the shared slot, each
listed in a per-tenant index), and its folder in the file storage (uploads, batch outputs, adapter
weights). Before this, deleting `x` and creating `x` again handed the new tenant the old one's files,
responses and spend.

A tenant with work still outstanding (reserved money: requests waiting or running, queue-mode batch lines;
a batch job not yet ended) is not deleted: its settlements would land in the new tenant's ledger. The
admin revokes its keys, cancels its jobs and deletes it once they end (`outstanding` says what is left).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from ossfleet.batch.store import TERMINAL, JobStore
from ossfleet.control.keyspace import KeySpace
from ossfleet.storage import FileStorage


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True)
class PurgeReport:
    """What a tenant's deletion removed, for the admin's answer and the audit stream."""

    files: int
    responses: int
    adapters: int
    batches: int
    ledger_keys: int

    def as_dict(self) -> dict[str, int]:
        return {"files": self.files, "responses": self.responses, "adapters": self.adapters,
                "batches": self.batches, "ledger_keys": self.ledger_keys}  # fmt: skip


async def outstanding(client: redis.asyncio.Redis, keys: KeySpace, tenant: str) -> list[str]:
    """What still runs for the tenant (empty: nothing; it may be deleted)."""
    reasons = []
    reserved = 0
    async for key in client.scan_iter(match=keys.tenant_pattern(tenant), count=500):
        name = _s(key)
        if ":budget:" in name:
            reserved += int(_s(await client.hget(name, "reserved") or 0))
    if reserved > 0:
        reasons.append(f"{reserved / 1e9:.6f} USD reserved by requests or batch lines still waiting or running")
    store = JobStore(client, keys.namespace)
    jobs = [_s(i) for i in await client.zrange(keys.batches(tenant), 0, -1)]
    running = [j for j in jobs if (job := await store.load(j)) is not None and job.status not in TERMINAL]
    if running:
        reasons.append(f"batch jobs not ended: {', '.join(running[:5])}{' ...' if len(running) > 5 else ''}")
    return reasons


async def purge_tenant(client: redis.asyncio.Redis, keys: KeySpace, tenant: str, storage: FileStorage) -> PurgeReport:
    """Remove every record and file of a tenant whose record and keys are already gone."""
    files = [_s(i) for i in await client.zrange(keys.files(tenant), 0, -1)]
    for fid in files:
        await client.delete(keys.file(fid))
    await client.delete(keys.files(tenant))

    responses = [_s(i) for i in await client.zrange(keys.responses(tenant), 0, -1)]
    for rid in responses:
        await client.delete(keys.response(rid))
    await client.delete(keys.responses(tenant))

    adapters = [_s(i) for i in await client.zrange(keys.adapters(tenant), 0, -1)]
    for aid in adapters:
        model, _, name = aid.partition(":")
        await client.delete(keys.adapter(tenant, model, name))
    await client.delete(keys.adapters(tenant))

    jobs = [_s(i) for i in await client.zrange(keys.batches(tenant), 0, -1)]
    for jid in jobs:
        await client.srem(keys.batches_active(), jid)
        await client.delete(keys.batch(jid), keys.batch_results(jid))
    await client.delete(keys.batches(tenant))

    ledger: list[Any] = [k async for k in client.scan_iter(match=keys.tenant_pattern(tenant), count=500)]
    for k in ledger:  # one at a time: on a cluster a multi-key DELETE must stay in one slot (these do)
        await client.delete(k)

    # The tenant's folder: uploads, batch outputs, adapter weights (and anything a crash left unlisted).
    await asyncio.to_thread(storage.delete_tree, storage.path(tenant, "").rstrip("/"))
    return PurgeReport(len(files), len(responses), len(adapters), len(jobs), len(ledger))
