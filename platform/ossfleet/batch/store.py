"""Batch jobs and files in Redis: records, owner-only reads, results recorded once.

Keys (under the namespace's hash tag, beside the queue's)::

    batch:<id>           hash: the job (tenant, status, counts, file ids, times, cursor)
    batches:<tenant>     zset: the tenant's jobs by creation time
    activebatches        set: jobs that need a driver (not yet in a terminal status)
    bres:<id>            hash: line index -> 'o' or 'e' + the result line (written once)
    file:<id>            hash: a file's owner, name, size, purpose and storage path
    files:<tenant>       zset: the tenant's files by creation time

Every read takes the caller's tenant: another tenant's job or file is
reported as not found, exactly like one that does not exist.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ossfleet.control.keyspace import KeySpace
from ossfleet.control.scripts import _s, _script, is_cluster
from ossfleet.errors import NotFound

if TYPE_CHECKING:
    import redis.asyncio

STATUSES = ("validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled")
TERMINAL = ("failed", "completed", "expired", "cancelled")
STAMPS = {
    "in_progress": "in_progress_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "cancelling": "cancelling_at",
    "cancelled": "cancelled_at",
}
_INT_FIELDS = ("total", "completed", "failed", "cursor", "created_at", "expires_at", *STAMPS.values())


@dataclass
class Job:
    id: str
    tenant: str
    status: str
    mode: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    expires_at: int
    total: int = 0
    completed: int = 0
    failed: int = 0
    cursor: int = 0
    model: str = ""
    output_file_id: str = ""
    error_file_id: str = ""
    prepared_path: str = ""
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    stamps: dict[str, int] = field(default_factory=dict)
    # What the job waits for, when it cannot run (dedicated mode: resources); "" while it runs.
    status_message: str = ""

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Job:
        ints = {k: int(h[k]) for k in _INT_FIELDS if h.get(k)}
        return cls(
            id=h["id"],
            tenant=h["tenant"],
            status=h["status"],
            mode=h.get("mode", "queue"),
            endpoint=h["endpoint"],
            input_file_id=h["input_file_id"],
            completion_window=h["completion_window"],
            created_at=ints.get("created_at", 0),
            expires_at=ints.get("expires_at", 0),
            total=ints.get("total", 0),
            completed=ints.get("completed", 0),
            failed=ints.get("failed", 0),
            cursor=ints.get("cursor", 0),
            model=h.get("model", ""),
            output_file_id=h.get("output_file_id", ""),
            error_file_id=h.get("error_file_id", ""),
            prepared_path=h.get("prepared_path", ""),
            metadata=json.loads(h["metadata"]) if h.get("metadata") else None,
            errors=json.loads(h["errors"]) if h.get("errors") else [],
            stamps={v: ints[v] for v in STAMPS.values() if v in ints},
            status_message=h.get("status_message", ""),
        )

    def to_hash(self) -> dict[str, str]:
        h = {
            "id": self.id, "tenant": self.tenant, "status": self.status, "mode": self.mode,
            "endpoint": self.endpoint, "input_file_id": self.input_file_id,
            "completion_window": self.completion_window, "created_at": str(self.created_at),
            "expires_at": str(self.expires_at), "total": str(self.total), "completed": str(self.completed),
            "failed": str(self.failed), "cursor": str(self.cursor), "model": self.model,
            "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "prepared_path": self.prepared_path, "metadata": json.dumps(self.metadata) if self.metadata else "",
            "errors": json.dumps(self.errors) if self.errors else "",
            "status_message": self.status_message,
        }  # fmt: skip
        h.update({k: str(v) for k, v in self.stamps.items()})
        return h

    def to_openai(self) -> dict[str, Any]:
        """The job as OpenAI's Batch object (plus ``mode``, ossfleet's)."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id or None,
            "error_file_id": self.error_file_id or None,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            **{k: self.stamps.get(k) for k in STAMPS.values()},
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
            "mode": self.mode,
            "model": self.model or None,
            "status_message": self.status_message or None,
        }


@dataclass(frozen=True)
class FileRecord:
    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: str

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


class JobStore:
    """Job and file records of one namespace."""

    def __init__(self, client: redis.asyncio.Redis, namespace: str = "ossfleet") -> None:
        self.r = client
        self.keys = KeySpace(namespace)
        self.cluster = is_cluster(client)
        self._record = client.register_script(_script("batch_record", self.cluster))
        self._transition = client.register_script(_script("batch_transition", self.cluster))
        self._charge = client.register_script(_script("batch_charge", self.cluster)) if self.cluster else None
        self._reserve = client.register_script(_script("batch_reserve", self.cluster))
        self._release_job = client.register_script(_script("batch_release_job", self.cluster))

    # -- jobs -------------------------------------------------------------------------

    async def create(self, job: Job, *, active: bool) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.keys.batch(job.id), mapping=dict(job.to_hash()))  # type: ignore[arg-type]
        pipe.zadd(self.keys.batches(job.tenant), {job.id: job.created_at})
        if active:
            pipe.sadd(self.keys.batches_active(), job.id)
        await pipe.execute()

    async def load(self, job_id: str) -> Job | None:
        raw: dict[Any, Any] = await self.r.hgetall(self.keys.batch(job_id))
        return Job.from_hash({_s(k): _s(v) for k, v in raw.items()}) if raw else None

    async def get(self, tenant: str, job_id: str) -> Job:
        """The tenant's own job; NotFound for a job of another tenant, as for none."""
        job = await self.load(job_id)
        if job is None or job.tenant != tenant:
            raise NotFound(f"no batch {job_id!r} for this tenant", param="batch_id")
        return job

    async def jobs(self, tenant: str, limit: int = 20, after: str | None = None) -> tuple[list[Job], bool]:
        """The tenant's jobs, newest first, after job ``after``; and whether more follow."""
        ids: list[Any] = await self.r.zrevrange(self.keys.batches(tenant), 0, -1)
        names = [_s(i) for i in ids]
        if after is not None:
            if after not in names:
                raise NotFound(f"no batch {after!r} for this tenant", param="after")
            names = names[names.index(after) + 1 :]
        page = names[:limit]
        jobs = [j for j in [await self.load(i) for i in page] if j is not None]
        return jobs, len(names) > limit

    async def stop_reason(self, job: Job) -> str | None:
        """Why a job's lines must stop being fed: 'cancelled', 'expired', a recorded stop ('budget',
        'resources': dedicated mode), or None to go on."""
        status, stop = await self.r.hmget(self.keys.batch(job.id), "status", "stop")
        if stop:
            return _s(stop)
        if status is not None and _s(status) == "cancelling":
            return "cancelled"
        if time.time() >= job.expires_at:
            return "expired"
        return None

    async def update(self, job_id: str, **fields: str | int) -> None:
        await self.r.hset(self.keys.batch(job_id), mapping={k: str(v) for k, v in fields.items()})

    async def transition(self, job_id: str, to: str, allowed: tuple[str, ...]) -> bool:
        """Move the job to ``to`` if it is in one of ``allowed``; False (nothing changed) if not."""
        reply = await self._transition(
            keys=[self.keys.slot()],
            args=[self.keys.namespace, job_id, to, int(time.time()), ",".join(allowed), STAMPS.get(to, ""),
                  "1" if to in TERMINAL else "0"],
        )  # fmt: skip
        return _s(reply[0]) == "OK"

    async def activate(self, job_id: str) -> None:
        await self.r.sadd(self.keys.batches_active(), job_id)

    async def active(self) -> list[str]:
        members: Any = await self.r.smembers(self.keys.batches_active())
        return sorted(_s(i) for i in members)

    # -- results ------------------------------------------------------------------------

    async def record(
        self,
        job_id: str,
        index: int,
        ok: bool,
        line: str,
        *,
        charge: tuple[str, str, str, int, int, int] | None = None,
        reserved_by: str = "",
    ) -> bool:
        """Record a line's result once; False if it already had one. ``charge``
        (tenant, period, model, input, output, cost) bills a dedicated-mode line in the same step, and
        ``reserved_by`` (its tenant) releases what the line reserved (:meth:`reserve`); on a cluster both
        happen in the tenant's slot first, once per line, then the record."""
        tenant, period, model, tin, tout, cost = charge or ("", "", "", 0, 0, 0)
        if self._charge is not None and (model or reserved_by):
            paid = {"tenant": tenant or reserved_by, "job": job_id, "index": index, "cost_nusd": cost,
                      "period": period, "model": model, "in_tokens": tin, "out_tokens": tout}  # fmt: skip
            await self._charge(keys=[self.keys.tenant_slot(tenant or reserved_by)],
                               args=[self.keys.namespace, json.dumps(paid, separators=(",", ":"))])  # fmt: skip
            model, reserved_by = "", ""
        record = {"job": job_id, "index": index, "kind": "o" if ok else "e", "line": line, "cost_nusd": cost,
                  "tenant": tenant, "period": period, "model": model, "in_tokens": tin, "out_tokens": tout,
                  "release_tenant": reserved_by}  # fmt: skip
        encoded = json.dumps(record, separators=(",", ":"))
        reply = await self._record(keys=[self.keys.slot()], args=[self.keys.namespace, encoded])
        return int(reply) == 1

    async def reserve(
        self, tenant: str, job_id: str, index: int, amount_nusd: int, period: str, limit_nusd: int
    ) -> bool:
        """Reserve the most a dedicated-mode line can cost before it runs; False when the tenant's budget
        (``limit_nusd``, -1 none) cannot hold it. A line reserved before (a redone line) stays reserved."""
        reply = await self._reserve(
            keys=[self.keys.tenant_slot(tenant)],
            args=[self.keys.namespace, tenant, job_id, index, amount_nusd, period, limit_nusd],
        )
        return int(reply) == 1

    async def release_job(self, tenant: str, job_id: str) -> int:
        """Release every reservation a job's lines still hold (lines that ran but were never recorded)."""
        return int(
            await self._release_job(keys=[self.keys.tenant_slot(tenant)], args=[self.keys.namespace, tenant, job_id])
        )

    async def done(self, job_id: str) -> set[int]:
        return {int(_s(i)) for i in await self.r.hkeys(self.keys.batch_results(job_id))}

    async def results(self, job_id: str) -> list[tuple[int, bool, str]]:
        """Every recorded result: (index, ok, line), in input order."""
        raw: dict[Any, Any] = await self.r.hgetall(self.keys.batch_results(job_id))
        out = [(int(_s(i)), _s(v)[0] == "o", _s(v)[1:]) for i, v in raw.items()]
        return sorted(out)

    async def drop_results(self, job_id: str) -> None:
        await self.r.delete(self.keys.batch_results(job_id))

    # -- files ----------------------------------------------------------------------------

    async def add_file(self, f: FileRecord) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(
            self.keys.file(f.id),
            mapping={"id": f.id, "tenant": f.tenant, "filename": f.filename, "purpose": f.purpose,
                     "bytes": str(f.bytes), "created_at": str(f.created_at), "path": f.path},
        )  # fmt: skip
        pipe.zadd(self.keys.files(f.tenant), {f.id: f.created_at})
        await pipe.execute()

    async def file(self, tenant: str, file_id: str) -> FileRecord:
        raw: dict[Any, Any] = await self.r.hgetall(self.keys.file(file_id))
        h = {_s(k): _s(v) for k, v in raw.items()}
        if not h or h["tenant"] != tenant:
            raise NotFound(f"no file {file_id!r} for this tenant", param="file_id")
        return FileRecord(
            h["id"], h["tenant"], h["filename"], h["purpose"], int(h["bytes"]), int(h["created_at"]), h["path"]
        )

    async def files(self, tenant: str, limit: int = 100) -> list[FileRecord]:
        ids: list[Any] = await self.r.zrevrange(self.keys.files(tenant), 0, limit - 1)
        return [await self.file(tenant, _s(i)) for i in ids]

    async def delete_file(self, tenant: str, file_id: str) -> FileRecord:
        f = await self.file(tenant, file_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.keys.file(file_id))
        pipe.zrem(self.keys.files(tenant), file_id)
        await pipe.execute()
        return f
