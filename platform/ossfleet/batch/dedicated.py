"""Dedicated mode: a Ray Data pipeline that owns its engines, for throughput.

read (the job's prepared lines, from its storage) -> engine actors in an
autoscaling actor pool (each builds the model's engine and runs a call's rows
concurrently) -> write (the job runner records each row in Redis, which is
the row-level checkpoint: a restarted job skips every row with a result).

Money follows a queue-mode line's path: before a row runs, its engine actor reserves the most it can cost
(its prompt and ``max_tokens`` at the batch discount) against the tenant's budget (``batch_reserve.lua``);
a row the budget cannot hold is not run, and the job stops with ``budget``. A row is charged when its result
is recorded (``batch_record.lua``), which releases its reservation in the same step, so a row redone after
a crash is never charged twice; rows in flight when a job stops are released uncharged when its run ends
(``batch_release_job.lua``). Spend never passes the budget.

Before the pipeline starts, the job waits until the cluster has free what one
engine actor and a read task need (Ray Data would otherwise wait silently,
for good, behind resources the Serve replicas hold). While it waits, the
job's ``status_message`` says which resources it lacks and since when; after
``batch.dedicated_start_timeout_s`` it fails with that reason.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from ossfleet.batch.format import BatchLine, error_line, output_line, parse_prepared
from ossfleet.control.admission import check_features
from ossfleet.control.budget import period_id
from ossfleet.control.pricing import NANO_PER_USD, cost_nusd
from ossfleet.engine.base import EngineError
from ossfleet.errors import OssfleetError
from ossfleet.harmony import raw_prompt_ids
from ossfleet.protocol.events import Outcome, StreamEvent, delta_event, fold
from ossfleet.protocol.openai import batch_request, response_body
from ossfleet.protocol.work import WorkItem
from ossfleet.replica.generation import Generation
from ossfleet.structured import grammar

if TYPE_CHECKING:
    from ossfleet.batch.store import Job, JobStore
    from ossfleet.control.gateway import GatewayCore
    from ossfleet.storage import FileStorage


class JobParts(Protocol):
    """What dedicated mode needs of the job runner that calls it (batch/runner.py's JobRunner): the
    gateway core (config, tenants, budgets), the job store and the file storage."""

    core: GatewayCore
    store: JobStore
    storage: FileStorage


_END = object()
# Ray Data's read task: a small CPU share (its default, a whole CPU, is often all a laptop has left).
READ_CPUS = 0.25
REPORT_EVERY_S = 2.0


def missing_resources(need: dict[str, float], available: dict[str, float], total: dict[str, float]) -> str | None:
    """What the cluster lacks for ``need`` right now, as words; None when all of it is free."""
    short = [k for k, v in need.items() if v > 0 and available.get(k, 0.0) + 1e-9 < v]
    if not short:
        return None
    return ", ".join(f"{need[k]:g} {k} (free {available.get(k, 0.0):g} of {total.get(k, 0.0):g})" for k in short)


class DedicatedEngine:
    """A Ray Data callable class: one engine, many rows per call, run concurrently."""

    def __init__(
        self, config: dict[str, Any], model: str, endpoint: str, done: list[int], redis_url: str, tenant: str,
        job_id: str, period: str, limit_nusd: int,
    ) -> None:  # fmt: skip
        from transformers import AutoTokenizer

        from ossfleet.batch.store import JobStore
        from ossfleet.chatformat import ChatFormat
        from ossfleet.config import parse_config
        from ossfleet.engine.factory import build_engine
        from ossfleet.redisdb import connect_async
        from ossfleet.structured import Grammars

        self.cfg = parse_config(config, config.get("source") or "<batch>")
        m = self.cfg.model(model)
        assert m is not None
        self.m = m
        self.endpoint = endpoint
        self.done = set(done)
        # Each row reserves its most before it runs (used on this actor's own event loop, below).
        self.store = JobStore(connect_async(redis_url, self.cfg.redis, max_connections=8), self.cfg.redis.namespace)
        self.tenant, self.job_id, self.period, self.limit_nusd = tenant, job_id, period, limit_nusd
        self.tok = AutoTokenizer.from_pretrained(self.cfg.model_path(m))
        self.fmt = ChatFormat.of(self.tok, self.cfg.model_path(m))
        self.renderer = self.fmt.renderer(self.tok, m.name)
        self.grammars = Grammars(self.tok)
        # The engine lives on an event loop of its own, which every call feeds.
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="ossfleet-dedicated").start()
        self.engine = asyncio.run_coroutine_threadsafe(build_engine(self.cfg, m, self.tok), self.loop).result()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        started = time.time()
        rows = [parse_prepared(str(t)) for t in batch["text"]]
        todo = [r for r in rows if r.index not in self.done]
        results = asyncio.run_coroutine_threadsafe(self._all(todo), self.loop).result()
        names = ("i", "ok", "line", "input_tokens", "output_tokens", "cost", "refused")
        cols: dict[str, list[Any]] = {k: [] for k in names}
        for r, (ok, line, tin, tout, cost) in zip(todo, results, strict=True):
            for k, v in zip(cols, (r.index, ok is True, line, tin, tout, cost, ok is None), strict=True):
                cols[k].append(v)
        cols["started"] = [started] * len(todo)  # when this call's rows reached the engine
        return cols

    async def _all(self, rows: list[BatchLine]) -> list[tuple[bool | None, str, int, int, int]]:
        return list(await asyncio.gather(*(self._one(r) for r in rows)))

    async def _one(self, row: BatchLine) -> tuple[bool | None, str, int, int, int]:
        """(True, output line, ...) or (False, error line, ...); (None, ...) when the budget cannot hold the row's
        most and it did not run."""
        rid = f"{row.index}-{row.custom_id}"[:64]
        try:
            req = batch_request(self.endpoint, row.body, self.cfg.limits)
            check_features(req, self.m)  # what the gateway refuses, refused here the same way
            fmt = req.output_format
            lark = grammar(fmt, req.max_tokens, harmony=self.fmt.family.harmony) if fmt is not None else None
            if lark is not None:
                self.grammars.check(lark, "response_format")
        except OssfleetError as e:
            return False, error_line(row.custom_id, e.code, e.message, status_code=e.http_status), 0, 0, 0
        if req.prompt is not None:
            try:
                prompt = raw_prompt_ids(self.tok, req.prompt, bos=not self.fmt.family.harmony)
            except OssfleetError as e:
                return False, error_line(row.custom_id, e.code, e.message, status_code=e.http_status), 0, 0, 0
        else:
            try:
                prompt = self.renderer.render(req.messages, effort=req.reasoning_effort or "medium", tools=req.tools)
            except OssfleetError as e:
                return False, error_line(row.custom_id, e.code, e.message, status_code=e.http_status), 0, 0, 0
        item = WorkItem.of(req, prompt, req.max_tokens, grammar=lark, discount=self.cfg.batch.discount)
        constraint = None
        if lark is not None and not getattr(self.engine, "enforces_grammar_text", False):
            constraint = self.grammars.constraint(lark)
        gen = Generation(self.tok, rid, item, constraint=constraint, fmt=self.fmt)
        most = cost_nusd(self.m.price, len(prompt), req.max_tokens, self.cfg.batch.discount)
        if not await self.store.reserve(self.tenant, self.job_id, row.index, most, self.period, self.limit_nusd):
            return None, "", 0, 0, 0
        out, seq = Outcome(), 0
        try:
            async for events in gen.run(self.engine):
                for event in events:
                    fold(out, StreamEvent("", delta_event(event, 1, seq)))
                    seq += 1
        except EngineError as e:
            return False, error_line(row.custom_id, "invalid_request", str(e), status_code=400), 0, 0, 0
        n = gen.output_tokens
        out.finish_reason = gen.finish
        out.input_tokens, out.output_tokens = len(prompt), n
        cost = cost_nusd(self.m.price, len(prompt), n, self.cfg.batch.discount)
        out.cost_nusd = cost
        body = response_body(self.endpoint, rid, self.m.name, 0, out, req.logprobs is not None)
        return True, output_line(row.custom_id, rid, body), len(prompt), n, cost


def _pipeline(runner: JobParts, job: Job, done: set[int], period: str, limit_nusd: int) -> Any:
    import ray.data
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    cfg = runner.core.cfg
    m = cfg.model(job.model)
    assert m is not None
    b = cfg.batch
    ds = ray.data.read_text(
        job.prepared_path, filesystem=PyFileSystem(FSSpecHandler(runner.storage.fs)),
        ray_remote_args={"num_cpus": READ_CPUS},
    )  # fmt: skip
    need = actor_resources(runner, job)
    return ds.map_batches(
        DedicatedEngine,
        fn_constructor_kwargs={
            "config": cfg.dump(),
            "model": m.name,
            "endpoint": job.endpoint,
            "done": sorted(done),
            "redis_url": runner.core.redis_url,
            "tenant": job.tenant,
            "job_id": job.id,
            "period": period,
            "limit_nusd": limit_nusd,
        },
        batch_size=b.dedicated_rows_per_call,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=b.dedicated_max_actors),
        num_gpus=need["GPU"],
        num_cpus=need["CPU"],
    )


def actor_resources(runner: JobParts, job: Job) -> dict[str, float]:
    """What one dedicated engine actor asks Ray for."""
    cfg = runner.core.cfg
    m = cfg.model(job.model)
    assert m is not None
    b = cfg.batch
    return {"CPU": m.num_cpus, "GPU": b.dedicated_num_gpus if b.dedicated_num_gpus is not None else m.num_gpus}


async def wait_for_resources(runner: JobParts, job: Job) -> str | None:
    """Wait until one engine actor and a read task could start; None then, or why the job must stop
    (a stop asked meanwhile, or 'resources' after the start timeout, with the reason in the job's errors).
    Meanwhile the job's ``status_message`` says what it lacks and since when."""
    import ray

    actor = actor_resources(runner, job)
    need = {**actor, "CPU": actor["CPU"] + READ_CPUS}
    timeout = runner.core.cfg.batch.dedicated_start_timeout_s
    t0, since = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    said = ""
    while True:
        stop = await runner.store.stop_reason(job)
        if stop is not None:
            return stop
        available, total = await asyncio.to_thread(lambda: (ray.available_resources(), ray.cluster_resources()))
        lacking = missing_resources(need, available, total)
        if lacking is None:
            if said:
                await runner.store.update(job.id, status_message="")
            return None
        message = (
            f"waiting for resources since {since}: one engine actor of {job.model} and a read task need "
            f"{lacking}; the job fails if they are not free within {timeout:g} s (batch.dedicated_start_timeout_s)"
        )
        if message != said:
            await runner.store.update(job.id, status_message=message)
            said = message
        if time.monotonic() - t0 >= timeout:
            reason = f"no resources for {timeout:g} s: {lacking} (one engine actor of {job.model} and a read task)"
            await runner.store.update(
                job.id, status_message="", errors=json.dumps([{"code": "resources_unavailable", "message": reason}])
            )
            return "resources"
        await asyncio.sleep(REPORT_EVERY_S)


async def run_dedicated(runner: JobParts, job: Job, lines: list[BatchLine]) -> tuple[str | None, list[BatchLine]]:
    """Run the job's rows that have no result yet; (stop reason, rows left without one)."""
    store = runner.store
    done = await store.done(job.id)
    if len(done) >= len(lines) and all(line.index in done for line in lines):
        return None, []
    # The tenant as Redis holds it now (one created through the admin API too); gone: no budget to hold to.
    tenant = await runner.core.tenants.get(job.tenant)
    period = period_id(tenant.budget.period) if tenant else period_id("monthly")
    limit_nusd = round(tenant.budget.limit_usd * NANO_PER_USD) if tenant else -1
    if tenant is not None and await runner.core.budget_left(tenant) <= 0:
        return "budget", [line for line in lines if line.index not in done]
    waited = await wait_for_resources(runner, job)
    if waited is not None:
        return waited, [line for line in lines if line.index not in done]
    loop = asyncio.get_running_loop()
    batches: asyncio.Queue[Any] = asyncio.Queue(maxsize=4)
    stopping = threading.Event()

    def produce() -> None:
        try:
            for batch in _pipeline(runner, job, done, period, limit_nusd).iter_batches(batch_size=None):
                if stopping.is_set():
                    break
                asyncio.run_coroutine_threadsafe(batches.put(batch), loop).result()
        except BaseException as e:  # surfaced in the runner
            asyncio.run_coroutine_threadsafe(batches.put(e), loop).result()
        finally:
            asyncio.run_coroutine_threadsafe(batches.put(_END), loop).result()

    thread = threading.Thread(target=produce, daemon=True, name=f"ossfleet-batch-{job.id}")
    thread.start()
    stop: str | None = None
    engine_started = 0.0
    while True:
        try:
            item = await asyncio.wait_for(batches.get(), timeout=0.5)
        except TimeoutError:
            item = None
        if stop is None:
            stop = await runner.store.stop_reason(job)
            if stop is not None:
                stopping.set()  # rows in flight are released: not recorded, not charged
        if item is _END:
            break
        if isinstance(item, BaseException):
            raise item
        if item is None or stop is not None:
            continue
        if len(item["i"]) and not engine_started:
            # When the engines first had rows: the job's start-up (actors, weights) ends here.
            engine_started = float(min(item["started"]))
            await store.update(job.id, engine_started_at=repr(engine_started))
        refused = False
        for i, ok, line, tin, tout, cost, no_room in zip(
            item["i"], item["ok"], item["line"], item["input_tokens"], item["output_tokens"], item["cost"],
            item["refused"], strict=True,
        ):  # fmt: skip
            if no_room:  # the budget could not hold this row's most: it did not run, and gets no result
                refused = True
                continue
            charge = (job.tenant, period, job.model, int(tin), int(tout), int(cost)) if ok else None
            await store.record(job.id, int(i), bool(ok), str(line), charge=charge, reserved_by=job.tenant)
        if refused:
            # Rows already reserved elsewhere finish and are recorded; none past the budget runs.
            stop = "budget"
            stopping.set()
    await asyncio.to_thread(thread.join)
    # Rows that ran but were not recorded (a stop while they were in flight) hold their reservations: release.
    await store.release_job(job.tenant, job.id)
    done = await store.done(job.id)
    return stop, [line for line in lines if line.index not in done]
