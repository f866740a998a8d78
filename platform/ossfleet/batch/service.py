"""Files and batch jobs as both APIs offer them (OpenAI's /v1/files and /v1/batches).

Creating a batch validates every line of its input file before anything
runs: a file with a bad line is refused as a whole (the batch is ``failed``,
its ``errors`` list each bad line with its number) unless the caller asked to
skip bad lines, which then go to the error file. A valid job is written out
for its driver (see ``ossfleet.batch.driver``) and handed to one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ossfleet.adapters.store import split_model
from ossfleet.batch.format import ENDPOINTS, BatchLine, LineError, error_line, iter_lines, validate
from ossfleet.batch.store import TERMINAL, FileRecord, Job, JobStore
from ossfleet.config import PlatformConfig, TenantConfig
from ossfleet.control.router import AUTO
from ossfleet.errors import InvalidRequest, OssfleetError, RequestTooLarge, from_unexpected
from ossfleet.protocol.openai import batch_request
from ossfleet.storage import FileStorage

if TYPE_CHECKING:
    from ossfleet.control.gateway import GatewayCore

log = logging.getLogger("ossfleet.batch")

MODES = ("queue", "dedicated")
PURPOSES = ("batch",)
# Errors kept on a failed job's record (every bad line up to this many; the count says how many in all).
MAX_REPORTED_ERRORS = 10_000
_WINDOW = re.compile(r"([0-9]+)([smhd])")  # fullmatch: "$" would match before a trailing newline


def window_seconds(window: str) -> int:
    m = _WINDOW.fullmatch(window)
    if not m:
        raise InvalidRequest(f"completion_window {window!r} is not like '24h'", param="completion_window")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _valid_metadata(metadata: dict[str, str]) -> bool:
    return len(metadata) <= 16 and all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
    )


class BatchService:
    """The operations behind /v1/files, /v1/batches and the gRPC batch RPCs."""

    def __init__(self, cfg: PlatformConfig, store: JobStore, start_driver: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.store = store
        self.storage = FileStorage(cfg.storage_url())
        self.start_driver = start_driver

    # -- files ---------------------------------------------------------------------------

    async def upload(self, t: TenantConfig, filename: str, purpose: str, data: bytes) -> FileRecord:
        if purpose not in PURPOSES:
            raise InvalidRequest(f"purpose must be one of {list(PURPOSES)}, got {purpose!r}", param="purpose")
        if len(data) > self.cfg.batch.max_file_bytes:
            raise RequestTooLarge(f"the file is {len(data)} bytes; the limit is {self.cfg.batch.max_file_bytes}")
        fid = f"file-{uuid.uuid4().hex}"
        path = self.storage.path(t.name, f"{fid}.jsonl")
        await asyncio.to_thread(self.storage.put, path, data)
        rec = FileRecord(fid, t.name, filename[:255] or "upload.jsonl", purpose, len(data), int(time.time()), path)
        await self.store.add_file(rec)
        return rec

    async def content(self, t: TenantConfig, file_id: str) -> bytes:
        f = await self.store.file(t.name, file_id)
        return await asyncio.to_thread(self.storage.get, f.path)

    async def delete_file(self, t: TenantConfig, file_id: str) -> FileRecord:
        f = await self.store.delete_file(t.name, file_id)
        await asyncio.to_thread(self.storage.delete, f.path)
        return f

    # -- batches ------------------------------------------------------------------------

    async def create(
        self,
        t: TenantConfig,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        *,
        metadata: dict[str, str] | None = None,
        mode: str = "queue",
        skip_invalid_lines: bool = False,
    ) -> Job:
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(f"endpoint must be one of {list(ENDPOINTS)}, got {endpoint!r}", param="endpoint")
        if completion_window not in self.cfg.batch.completion_windows:
            raise InvalidRequest(
                f"completion_window must be one of {self.cfg.batch.completion_windows}, got {completion_window!r}",
                param="completion_window",
            )
        if mode not in MODES:
            raise InvalidRequest(f"mode must be one of {list(MODES)}, got {mode!r}", param="mode")
        if metadata is not None and not _valid_metadata(metadata):
            raise InvalidRequest(
                "metadata: at most 16 string pairs (keys <= 64, values <= 512 chars)", param="metadata"
            )
        f = await self.store.file(t.name, input_file_id)
        if f.purpose != "batch":
            raise InvalidRequest(
                f"file {input_file_id!r} has purpose {f.purpose!r}, not 'batch'", param="input_file_id"
            )
        now = int(time.time())
        job = Job(
            id=f"batch_{uuid.uuid4().hex}", tenant=t.name, status="validating", mode=mode, endpoint=endpoint,
            input_file_id=input_file_id, completion_window=completion_window, created_at=now,
            expires_at=now + window_seconds(completion_window), metadata=metadata,
        )  # fmt: skip
        await self.store.create(job, active=False)
        try:
            data = await asyncio.to_thread(self.storage.get, f.path)
            checked = await asyncio.to_thread(
                validate, iter_lines(data), endpoint, self._body_checker(t, endpoint),
                max_lines=self.cfg.batch.max_lines,
            )  # fmt: skip
        except Exception as exc:  # never left in `validating`: the job fails, saying why
            err = from_unexpected(exc, log, f"batch {job.id} validation")
            job.errors = [{"code": err.code, "message": err.message, "param": None, "line": None}]
            await self.store.update(job.id, errors=json.dumps(job.errors))
            await self.store.transition(job.id, "failed", ("validating",))
            return await self.store.get(t.name, job.id)
        errors = list(checked.errors)
        model = ""
        if mode == "dedicated" and checked.lines:
            model, problem = self._dedicated_model(t, checked.lines)
            if problem:
                errors.append(LineError(checked.lines[0].line, problem))
        if errors and not (skip_invalid_lines and checked.lines):
            job.errors = [
                {"code": "invalid_request", "message": e.message, "param": None, "line": e.line}
                for e in errors[:MAX_REPORTED_ERRORS]
            ]
            job.total = len(checked.lines) + len(checked.errors)
            await self.store.update(job.id, errors=json.dumps(job.errors), total=job.total)
            await self.store.transition(job.id, "failed", ("validating",))
            log.info("event=batch_invalid batch=%s tenant=%s bad_lines=%d", job.id, t.name, len(errors))
            return await self.store.get(t.name, job.id)
        prepared = self.storage.path(t.name, f"{job.id}.prepared.jsonl")
        await asyncio.to_thread(self.storage.write_lines, prepared, (line.prepared() for line in checked.lines))
        for e in errors:  # skipped lines: straight to the error file
            await self.store.record(job.id, e.line - 1, False, error_line(e.custom_id, "invalid_request", str(e)))
        await self.store.update(
            job.id, total=len(checked.lines) + len(errors), prepared_path=prepared, model=model, cursor=0
        )
        await self.store.transition(job.id, "in_progress", ("validating",))
        await self.store.activate(job.id)
        log.info(
            "event=batch_created batch=%s tenant=%s mode=%s lines=%d skipped=%d",
            job.id, t.name, mode, len(checked.lines), len(errors),
        )  # fmt: skip
        self.start_driver(job.id)
        return await self.store.get(t.name, job.id)

    def _body_checker(self, t: TenantConfig, endpoint: str) -> Callable[[dict[str, Any]], str | None]:
        models = {m.name for m in self.cfg.models}

        def check(body: dict[str, Any]) -> str | None:
            try:
                req = batch_request(endpoint, body, self.cfg.limits)
            except OssfleetError as e:
                return e.message
            except Exception as exc:  # a check that breaks fails its line, not the whole upload
                return from_unexpected(exc, log, "batch line check").message
            # An adapter ("<model>:<adapter>") is looked up when its line is submitted: a missing one fails
            # that line alone.
            base, _ = split_model(req.model)
            if base != AUTO and base not in models:
                return f"model {base!r} does not exist; available: {sorted(models)} or 'auto'"
            if base != AUTO and not t.may_use(base):
                return f"tenant {t.name!r} may not use model {base!r}"
            return None

        return check

    def _dedicated_model(self, t: TenantConfig, lines: list[BatchLine]) -> tuple[str, str | None]:
        names = {str(line.body.get("model")) for line in lines}
        if len(names) != 1:
            return "", f"a dedicated batch runs one model; its lines name {sorted(names)}"
        name = names.pop()
        if split_model(name)[1] is not None:
            return "", (
                f"dedicated mode runs base models only; lines naming the adapter {name!r} run in mode 'queue', "
                "on the replicas that serve adapters"
            )
        m = self.cfg.model(name)
        if m is None:
            return "", f"a dedicated batch needs an explicit model, not {name!r}"
        if m.stages() > 1:
            return "", (
                f"model {name!r} runs as a {m.stages()}-stage pipeline; dedicated mode runs single-stage "
                "models, use mode 'queue' for it"
            )
        return name, None

    async def get(self, t: TenantConfig, job_id: str) -> Job:
        return await self.store.get(t.name, job_id)

    async def jobs(self, t: TenantConfig, limit: int = 20, after: str | None = None) -> tuple[list[Job], bool]:
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit must be between 1 and 100", param="limit")
        return await self.store.jobs(t.name, limit, after)

    async def cancel(self, t: TenantConfig, job_id: str) -> Job:
        """Ask the job to stop: lines in flight finish, the rest go to the error file as cancelled."""
        job = await self.store.get(t.name, job_id)
        if job.status in TERMINAL or job.status == "cancelling":
            return job
        if await self.store.transition(job_id, "cancelling", ("validating", "in_progress")):
            log.info("event=batch_cancelling batch=%s tenant=%s", job_id, t.name)
        return await self.store.get(t.name, job_id)


def batch_service(core: GatewayCore) -> BatchService:
    """The batch service of a gateway: its jobs in the gateway's Redis, each job handed to a driver actor
    (``ossfleet.batch.driver``) in the gateway's Ray cluster."""
    from ossfleet.batch.driver import ensure_driver  # Ray, which only a started job needs

    ns = core.cfg.redis.namespace
    dump = core.cfg.dump()
    return BatchService(core.cfg, JobStore(core.r, ns), lambda job_id: ensure_driver(dump, core.redis_url, ns, job_id))
