"""The queue-mode job runner in one process, on the real embedded Redis, with a stub replica.

A runner killed mid-job and started again re-attaches to the lines it had
admitted (their idempotency keys), even when the job was cancelled meanwhile:
each line is in exactly one file, and only lines that ran are charged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from transformers import AutoTokenizer

from ossfleet.batch.runner import JobRunner
from ossfleet.batch.service import batch_service
from ossfleet.config import parse_config
from ossfleet.control.budget import period_id
from ossfleet.control.gateway import GatewayCore
from ossfleet.engine.base import EngineRequest, TokenOutput
from ossfleet.engine.stub import StubEngine
from ossfleet.harmony import SpecialIds
from ossfleet.replica.worker import ReplicaWorker
from ossfleet.tasks import cancel_and_wait


def config(ckpt, namespace, storage) -> dict:
    return {
        "redis": {"namespace": namespace},
        "batch": {"storage_url": str(storage), "window": 8},
        "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(ckpt), "engine": "stub",
                    "max_batch_size": 4, "price": {"input_per_1k": 0.001, "output_per_1k": 0.002}}],
        "tenants": [{"name": "acme", "budget": {"limit_usd": 100}}],
    }  # fmt: skip


class GatedStubEngine(StubEngine):
    """The stub engine, except that requests after the first ``free`` wait for ``gate`` before their first token.

    It holds the job at a known point (exactly ``free`` lines finished, the
    next ones admitted and running) however fast the machine is.
    """

    def __init__(self, *args: Any, free: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.free = free
        self.started = 0
        self.gate = asyncio.Event()

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenOutput]:
        self.started += 1
        if self.started > self.free:
            await self.gate.wait()
        async for out in super().generate(request):
            yield out


async def dump_tasks_after(seconds: float, test: asyncio.Task) -> None:
    """A watchdog: if the test still runs after ``seconds``, print where every task waits and cancel
    the test (a hang then shows its awaits, not only its threads)."""
    import sys

    await asyncio.sleep(seconds)
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}", file=sys.stderr)
        task.print_stack(file=sys.stderr)
    test.cancel()


def jsonl(n: int) -> bytes:
    return "\n".join(
        json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": f"q{i}"}],
                             "max_tokens": 8}})
        for i in range(n)
    ).encode()  # fmt: skip


async def test_a_runner_killed_mid_job_and_cancelled_resumes_without_losing_or_double_charging(
    tiny_checkpoint, redis_server, namespace, tmp_path
):
    from ossfleet.redisdb import connect_async

    test = asyncio.current_task()
    assert test is not None
    watchdog = asyncio.create_task(dump_tasks_after(240, test))
    try:
        await _runner_killed_mid_job(tiny_checkpoint, redis_server, namespace, tmp_path, connect_async)
    finally:
        watchdog.cancel()


async def _runner_killed_mid_job(tiny_checkpoint, redis_server, namespace, tmp_path, connect_async):
    cfg = parse_config(config(tiny_checkpoint, namespace, tmp_path / "files"), "<runner>")
    core = GatewayCore(cfg, redis_server.url)
    batches = batch_service(core)
    batches.start_driver = lambda job_id: None  # the test drives the runner itself
    t = cfg.tenants[0]
    f = await batches.upload(t, "in.jsonl", "batch", jsonl(60))
    job = await batches.create(t, f.id, "/v1/chat/completions", "24h")
    assert job.status == "in_progress" and job.total == 60

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    ids = SpecialIds.of(tok)
    header = [ids.channel, *tok.encode("final", add_special_tokens=False), ids.message]
    bell = connect_async(redis_server.url)
    engine = GatedStubEngine(header, ids.return_, max_slots=4, token_delay_s=0.02, chunk=1, free=6)
    worker = ReplicaWorker(
        core.queue, engine, tok,
        model="gpt-oss-20b", owner="w1", price=cfg.models[0].price, bell_client=bell,
    )  # fmt: skip
    worker.start()

    first = asyncio.create_task(JobRunner(core, batches.store, batches.storage, job.id).run())
    # The gate holds every line after the sixth, so the job stops at exactly 6 recorded lines
    # with more admitted: a state that, once reached, stays until the gate opens.
    deadline = asyncio.get_running_loop().time() + 120
    while (now := await batches.get(t, job.id)).completed < 6:
        assert asyncio.get_running_loop().time() < deadline, (
            f"stuck: completed={now.completed} cursor={now.cursor} engine.started={engine.started} "
            f"running={len(worker._tasks)} worker_error={worker.last_error} runner_done={first.done()} "
            f"runner={first.exception() if first.done() else None!r}"
        )
        await asyncio.sleep(0.05)
    await cancel_and_wait(first)  # the driver dies here, lines in flight (a lone cancel can be lost on 3.11)
    killed_at = await batches.get(t, job.id)
    assert killed_at.completed == 6 < killed_at.cursor <= 60, "lines were admitted and not yet recorded"
    await batches.cancel(t, job.id)
    engine.gate.set()

    status = await JobRunner(core, batches.store, batches.storage, job.id).run()
    assert status == "cancelled"
    done = await batches.get(t, job.id)
    out = [json.loads(x) for x in (await batches.content(t, done.output_file_id)).decode().splitlines()]
    err = [json.loads(x) for x in (await batches.content(t, done.error_file_id)).decode().splitlines()]
    assert sorted(x["custom_id"] for x in out + err) == sorted(f"c{i}" for i in range(60))
    # Every line admitted before the kill was re-attached and finished: all of them are outputs.
    assert len(out) >= killed_at.cursor and {x["error"]["code"] for x in err} == {"batch_cancelled"}
    usage = await core.r.hgetall(core.queue.keys.usage("acme", period_id("monthly")))
    assert int(usage[b"gpt-oss-20b:requests"]) == len(out), "each line that ran charged once, none twice"
    assert int(await core.r.hget(core.queue.keys.budget("acme", period_id("monthly")), "reserved")) == 0
    await worker.drain(grace_s=1)
    await bell.aclose()
    await core.close()
