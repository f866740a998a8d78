"""The job driver: one detached Ray actor per running batch job.

Ray restarts a driver whose process dies (``max_restarts``); gateways start
every active job's driver every few seconds (:func:`adopt_active`, cheap and
idempotent), which also gives a job whose driver is gone for good (its node
lost, the cluster restarted) a new one. The runner resumes from Redis.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from ossfleet.batch.runner import JobRunner
from ossfleet.batch.store import JobStore
from ossfleet.config import parse_config
from ossfleet.control.gateway import GatewayCore
from ossfleet.storage import FileStorage

log = logging.getLogger("ossfleet.batch")

RAY_NAMESPACE = "ossfleet"


def driver_name(namespace: str, job_id: str) -> str:
    return f"batch-driver:{namespace}:{job_id}"


@ray.remote(num_cpus=0, max_restarts=-1)
class BatchDriver:
    """Runs one job's runner in the background; :meth:`start` is cheap and idempotent."""

    def __init__(self, config: dict[str, Any], redis_url: str, job_id: str) -> None:
        self.config = config
        self.redis_url = redis_url
        self.job_id = job_id
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Start the runner unless it runs already (or restart it after it failed); True if started."""
        if self._task is not None and not self._task.done():
            return False
        self._task = asyncio.get_running_loop().create_task(self._run_then_leave())
        return True

    async def _run_then_leave(self) -> None:
        try:
            status = await self._run()
        except Exception:
            # Redis away, say: the next start() (a gateway re-adopts every few seconds) tries again.
            log.exception("event=batch_driver_error batch=%s", self.job_id)
            return
        log.info("event=batch_driver_done batch=%s status=%s", self.job_id, status)
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    async def _run(self) -> str:
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
    handle.start.remote()
    return handle


async def adopt_active(config: dict[str, Any], redis_url: str, store: Any) -> int:
    """Give every active job a driver (those that have one keep it); the number of active jobs."""
    jobs = await store.active()

    def adopt() -> None:  # Ray's actor lookups block: off the event loop
        for job_id in jobs:
            try:
                ensure_driver(config, redis_url, store.keys.namespace, job_id)
            except Exception as e:
                log.warning("event=batch_adopt_failed batch=%s error=%r", job_id, type(e).__name__)

    if jobs:
        await asyncio.to_thread(adopt)
    return len(jobs)
