"""Drive one batch job to its end: feed lines, collect results, write the files.

All progress lives in Redis (the job's cursor and each line's result), so a
runner killed at any point and started again picks up where it was:

- queue mode admits each line with an idempotency key of its own
  (``<job>:<line>``), so re-admitting a line after a crash re-attaches to the
  request already queued or finished instead of running (and charging) it twice;
- a line's result is recorded at most once (``batch_record.lua``);
- dedicated mode (``ossfleet.batch.dedicated``) skips lines that have a result.

A cancelled or expired job stops feeding; lines in flight finish (queue mode)
or are released uncharged (dedicated mode); every line not run goes to the
error file, so each input line ends in exactly one of the two files.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import redis.exceptions

from ossfleet.batch.format import BatchLine, error_line, output_line, parse_prepared
from ossfleet.batch.store import TERMINAL, FileRecord, Job, JobStore
from ossfleet.control.queue import queue_model
from ossfleet.control.scripts import _s
from ossfleet.errors import OssfleetError, QueueFull, RateLimited, RequestFailed, Unavailable, from_unexpected
from ossfleet.protocol.openai import batch_request, response_body

if TYPE_CHECKING:
    from ossfleet.config import TenantConfig
    from ossfleet.control.gateway import GatewayCore
    from ossfleet.storage import FileStorage

log = logging.getLogger("ossfleet.batch")

STOP_CODES = {"cancelled": "batch_cancelled", "expired": "batch_expired", "budget": "budget_exhausted",
              "resources": "resources_unavailable"}  # fmt: skip
STOP_MESSAGES = {
    "cancelled": "the batch was cancelled before this request ran",
    "expired": "the batch expired before this request ran",
    "budget": "the tenant's budget ran out before this request ran",
    "resources": "the batch's dedicated engines could not get their resources (see the batch's errors)",
}
# A job stopped by its budget completes (like a queue-mode job whose lines met the budget).
FINAL_STATUS = {None: "completed", "cancelled": "cancelled", "expired": "expired", "budget": "completed",
                "resources": "failed"}  # fmt: skip


class JobRunner:
    def __init__(self, core: GatewayCore, store: JobStore, storage: FileStorage, job_id: str) -> None:
        self.core = core
        self.store = store
        self.storage = storage
        self.job_id = job_id
        self.window = core.cfg.batch.window
        self.created = int(time.time())

    async def run(self) -> str:
        """Run the job to a terminal status and return it."""
        job = await self.store.load(self.job_id)
        if job is None:
            raise ValueError(f"no batch {self.job_id!r}")
        if job.status in TERMINAL:
            return job.status
        if job.status == "validating":  # its creator died while validating: nothing ran
            await self.store.update(job.id, errors='[{"code": "validation_interrupted", "message": "retry"}]')
            await self.store.transition(job.id, "failed", ("validating",))
            return "failed"
        if job.status != "finalizing":
            lines = await asyncio.to_thread(
                lambda: [parse_prepared(s) for s in self.storage.iter_lines(job.prepared_path)]
            )
            if job.mode == "dedicated":
                from ossfleet.batch.dedicated import run_dedicated

                stop, remaining = await run_dedicated(self, job, lines)
            else:
                stop, remaining = await self._queue(job, lines)
            if stop is not None:
                for line in remaining:
                    message = STOP_MESSAGES[stop]
                    await self.store.record(
                        job.id, line.index, False, error_line(line.custom_id, STOP_CODES[stop], message)
                    )
            await self.store.update(job.id, stop=stop or "")
            await self.store.transition(job.id, "finalizing", ("in_progress", "cancelling"))
        return await self._finalize(job)

    # -- queue mode -------------------------------------------------------------------------

    async def _queue(self, job: Job, lines: list[BatchLine]) -> tuple[str | None, list[BatchLine]]:
        t = await self.core.tenants.get(job.tenant)
        done = await self.store.done(job.id)
        # Lines admitted before a restart but not recorded: admitted again, which
        # (idempotency keys) re-attaches to their requests.
        pending = collections.deque(line for line in lines[: job.cursor] if line.index not in done)
        cursor = job.cursor
        # One task per admitted line, each following its request's stream through the
        # gateway's stream hub (one XREAD for all of them) and recording its result.
        waiting: set[asyncio.Task[None]] = set()
        stop: str | None = None
        next_check = 0.0
        try:
            while True:
                if time.monotonic() >= next_check:
                    stop = await self.store.stop_reason(job)
                    next_check = time.monotonic() + 0.5
                blocked = False
                # Lines admitted before a restart are re-attached even after a stop (they may be
                # running and charged); lines past the cursor are admitted only while none is asked.
                while len(waiting) < self.window and (pending or (stop is None and cursor < len(lines))):
                    line = pending[0] if pending else lines[cursor]
                    if t is None:
                        await self._record_error(
                            job, line, "tenant_removed", f"tenant {job.tenant!r} is no longer configured", 403
                        )
                        follow = None
                    else:
                        try:
                            follow = await self._admit(job, t, line)
                        except (QueueFull, RateLimited, Unavailable):
                            blocked = True  # the queue is full: try again shortly, in order
                            break
                    if pending:
                        pending.popleft()
                    else:
                        cursor += 1
                        await self.store.update(job.id, cursor=cursor)
                    if follow is not None:
                        waiting.add(asyncio.create_task(follow))
                if not waiting:
                    if not pending and (stop is not None or cursor >= len(lines)):
                        break
                    await asyncio.sleep(0.2 if blocked else 0)
                    continue
                finished, _ = await asyncio.wait(waiting, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    waiting.discard(task)
                    task.result()  # a Redis error ends the run; the driver starts it again
        finally:
            for task in waiting:
                task.cancel()
        return stop, lines[cursor:]

    async def _admit(self, job: Job, t: TenantConfig, line: BatchLine) -> Coroutine[Any, Any, None] | None:
        """Admit a line; the coroutine that collects its result, or None if it was refused (recorded)."""
        try:
            req = replace(
                batch_request(job.endpoint, line.body, self.core.cfg.limits), idempotency_key=f"{job.id}:{line.index}"
            )
            sub = await self.core.submit(t, req)
        except (QueueFull, RateLimited, Unavailable, redis.exceptions.RedisError, OSError):
            raise  # try again later (the driver restarts a run that a Redis error ended)
        except OssfleetError as e:
            await self._record_error(job, line, e.code, e.message, e.http_status)
            return None
        except Exception as e:  # never a stuck job: the line fails, with an id for the operator's log
            err = from_unexpected(e, log, f"batch {job.id} line {line.index + 1}")
            await self._record_error(job, line, err.code, err.message, err.http_status)
            return None
        return self._collect(job, line, sub.request_id, sub.model_name, req.logprobs is not None)

    async def _collect(self, job: Job, line: BatchLine, rid: str, model: str, logprobs: bool = False) -> None:
        """Wait for the line's request to end and record its response or its error."""
        try:
            out = await self.core.relay.outcome(model, rid)
        except RequestFailed as e:
            # No record: a driver was down longer than the stream TTL.
            if await self.core.queue.tenant_of(queue_model(model), rid) is None:
                code, message = "result_expired", "the request's result expired before it was collected"
            else:
                code, message = "generation_failed", e.message
            await self._record_error(job, line, code, message, 500, rid)
            return
        body = response_body(job.endpoint, rid, model, self.created, out, logprobs)
        await self.store.record(job.id, line.index, True, output_line(line.custom_id, rid, body))

    async def _record_error(
        self, job: Job, line: BatchLine, code: str, message: str, status: int, rid: str = ""
    ) -> None:
        await self.store.record(
            job.id, line.index, False, error_line(line.custom_id, code, message, status_code=status, request_id=rid)
        )

    # -- the end ------------------------------------------------------------------------------

    async def _finalize(self, job: Job) -> str:
        """Write the output and error files (input order) and settle the job's status."""
        raw_stop = await self.store.r.hget(self.store.keys.batch(job.id), "stop")
        stop = _s(raw_stop) if raw_stop else None  # why feeding stopped, recorded before finalizing
        await self.store.r.expire(self.store.keys.batch_results(job.id), 7 * 86400)
        results = await self.store.results(job.id)
        ids: dict[str, str | int] = {}
        for ok, kind, field_name in ((True, "output", "output_file_id"), (False, "errors", "error_file_id")):
            chosen = [line for _, good, line in results if good is ok]
            if not chosen:
                continue
            fid = f"file-{job.id.removeprefix('batch_')}-{kind}"
            path = self.storage.path(job.tenant, f"{fid}.jsonl")
            size = await asyncio.to_thread(self.storage.write_lines, path, iter(chosen))
            await self.store.add_file(
                FileRecord(fid, job.tenant, f"{job.id}_{kind}.jsonl", "batch_output", size, int(time.time()), path)
            )
            ids[field_name] = fid
        if ids:
            await self.store.update(job.id, **ids)
        final = FINAL_STATUS[stop]
        await self.store.transition(job.id, final, ("finalizing",))
        await self.store.drop_results(job.id)
        fresh = await self.store.load(job.id)
        assert fresh is not None
        log.info(
            "event=batch_finished batch=%s tenant=%s status=%s total=%d completed=%d failed=%d",
            job.id, job.tenant, fresh.status, fresh.total, fresh.completed, fresh.failed,
        )  # fmt: skip
        return fresh.status
