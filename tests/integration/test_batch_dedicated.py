"""A dedicated-mode job that cannot get its resources says so, and fails with that reason in time.

A real local Ray with CPUs and no GPU, the real embedded Redis, the job runner
in this process: the job's engine actor asks for a GPU that does not exist.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from ossfleet.batch.runner import JobRunner
from ossfleet.batch.service import batch_service
from ossfleet.config import parse_config
from ossfleet.control.gateway import GatewayCore


@pytest.fixture(scope="module")
def ray_no_gpu():
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def config(ckpt, namespace, storage, timeout_s) -> dict:
    return {
        "redis": {"namespace": namespace},
        "batch": {"storage_url": str(storage), "dedicated_start_timeout_s": timeout_s},
        "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(ckpt), "engine": "stub",
                    "num_gpus": 1, "num_cpus": 0.25}],
        "tenants": [{"name": "acme", "budget": {"limit_usd": 100}}],
    }  # fmt: skip


def jsonl(n: int) -> bytes:
    return "\n".join(
        json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}})
        for i in range(n)
    ).encode()  # fmt: skip


async def start(ckpt, redis_url, namespace, tmp_path, timeout_s):
    cfg = parse_config(config(ckpt, namespace, tmp_path / "files", timeout_s), "<dedicated>")
    core = GatewayCore(cfg, redis_url)
    batches = batch_service(core)
    batches.start_driver = lambda job_id: None  # the test runs the runner itself
    t = cfg.tenants[0]
    f = await batches.upload(t, "in.jsonl", "batch", jsonl(5))
    job = await batches.create(t, f.id, "/v1/chat/completions", "24h", mode="dedicated")
    runner = asyncio.create_task(JobRunner(core, batches.store, batches.storage, job.id).run())
    return core, batches, t, job, runner


async def errors_of(batches, t, job) -> list[dict]:
    return [json.loads(x) for x in (await batches.content(t, job.error_file_id)).decode().splitlines()]


async def test_hardening_dedicated_job_without_resources_fails_naming_them(
    ray_no_gpu, tiny_checkpoint, redis_server, namespace, tmp_path
):
    core, batches, t, job, runner = await start(tiny_checkpoint, redis_server.url, namespace, tmp_path, timeout_s=1)
    assert await runner == "failed"
    done = await batches.get(t, job.id)
    assert done.status == "failed" and done.completed == 0 and done.failed == 5
    assert [e["code"] for e in done.errors] == ["resources_unavailable"]
    assert "1 GPU (free 0 of 0)" in done.errors[0]["message"]
    assert {e["error"]["code"] for e in await errors_of(batches, t, done)} == {"resources_unavailable"}
    assert done.status_message == ""
    await core.close()


async def test_hardening_dedicated_job_waiting_for_resources_says_so_and_can_be_cancelled(
    ray_no_gpu, tiny_checkpoint, redis_server, namespace, tmp_path
):
    core, batches, t, job, runner = await start(tiny_checkpoint, redis_server.url, namespace, tmp_path, timeout_s=3600)
    while not (waiting := await batches.get(t, job.id)).status_message:
        await asyncio.sleep(0.05)
    assert waiting.status == "in_progress"
    msg = waiting.status_message
    assert msg.startswith("waiting for resources since ") and "1 GPU (free 0 of 0)" in msg and "3600 s" in msg
    assert waiting.to_openai()["status_message"] == msg  # what the API and `ossfleet batch status` show
    await batches.cancel(t, job.id)
    assert await runner == "cancelled"
    done = await batches.get(t, job.id)
    assert {e["error"]["code"] for e in await errors_of(batches, t, done)} == {"batch_cancelled"}
    await core.close()
