"""The job driver: one detached Ray actor per running batch job.

Ray restarts a driver that dies (``max_restarts``) and retries its ``run``
(``max_task_retries``); the runner resumes from Redis. Gateways also adopt
every active job every few seconds (:func:`adopt_active`): a job whose
driver is gone for good (its node lost, the cluster restarted) gets a new one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

log = logging.getLogger("ossfleet.batch")

RAY_NAMESPACE = "ossfleet"


def driver_name(namespace: str, job_id: str) -> str:
    return f"batch-driver:{namespace}:{job_id}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class BatchDriver:
    def __init__(self, config: dict[str, Any], redis_url: str, job_id: str) -> None:
        self.config = config
        self.redis_url = redis_url
        self.job_id = job_id
        self._task: asyncio.Task[str] | None = None

    async def run(self) -> str:
        """Run the job to its end (once, however often called), then leave."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        status = await asyncio.shield(self._task)
        # Leave once this call has returned (exiting inside it would make Ray retry it).
        me = ray.get_runtime_context().current_actor
        asyncio.get_running_loop().call_later(0.5, lambda: ray.kill(me, no_restart=True))
        return status

    async def _run(self) -> str:
        from ossfleet.batch.runner import JobRunner
        from ossfleet.batch.storage import FileStorage
        from ossfleet.batch.store import JobStore
        from ossfleet.config import parse_config
        from ossfleet.gateway import GatewayCore

        cfg = parse_config(self.config, self.config.get("source") or "<batch driver>")
        core = GatewayCore(cfg, self.redis_url)
        try:
            runner = JobRunner(core, JobStore(core.r, cfg.redis.namespace), FileStorage(cfg.storage_url()), self.job_id)
            return await runner.run()
        finally:
            await core.close()

    def pid(self) -> int:
        import os

        return os.getpid()


def ensure_driver(config: dict[str, Any], redis_url: str, namespace: str, job_id: str) -> Any:
    """The job's driver, started if it is not running (idempotent across gateways)."""
    handle = BatchDriver.options(  # type: ignore[attr-defined]
        name=driver_name(namespace, job_id), namespace=RAY_NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(config, redis_url, job_id)
    handle.run.remote()
    return handle


async def adopt_active(config: dict[str, Any], redis_url: str, store: Any) -> int:
    """Give every active job a driver (those that have one keep it); the number of active jobs."""
    jobs = await store.active()
    for job_id in jobs:
        try:
            ensure_driver(config, redis_url, store.prefix[1:-2], job_id)
        except Exception as e:
            log.warning("event=batch_adopt_failed batch=%s error=%r", job_id, type(e).__name__)
    return len(jobs)
