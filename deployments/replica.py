"""A model replica deployment: one engine and the Redis pull loop that feeds it.

The replica receives no requests through Ray Serve: it pulls them from Redis
(see ``ossfleet.replica.worker``). Ray Serve gives it placement (a GPU, or a placement
group for pipeline groups), health checks, restarts and scaling.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import replace
from typing import Any

from ray import serve

from ossfleet import metrics
from ossfleet.chatformat import ChatFormat
from ossfleet.config import parse_config
from ossfleet.control.queue import queue_for
from ossfleet.engine.base import Engine
from ossfleet.engine.factory import build_engine
from ossfleet.redisdb import connect_async
from ossfleet.replica.cold_start import ColdStart
from ossfleet.replica.worker import ReplicaWorker
from ossfleet.storage import FileStorage

log = logging.getLogger("ossfleet.replica")


@serve.deployment(name="ModelReplica", graceful_shutdown_timeout_s=60, health_check_period_s=5)
class ModelReplica:
    def __init__(self, config: dict[str, Any], model: str, redis_url: str) -> None:
        from transformers import AutoTokenizer

        self.cold_start = ColdStart()
        self.cold_start.mark("init")
        cfg = parse_config(config, config.get("source") or "<serve args>")
        m = cfg.model(model)
        if m is None:
            raise ValueError(f"model {model!r} is not in the config")
        self.model = m
        self.cfg = cfg
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model_path(m))
        self.cold_start.mark("tokenizer")
        self.redis = connect_async(redis_url, cfg.redis)
        self.bell = connect_async(redis_url, cfg.redis)
        self.owner = f"{m.name}@{socket.gethostname()}:{os.getpid()}"
        self.engine: Engine | None = None
        self.worker: ReplicaWorker | None = None
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        self.engine = await build_engine(self.cfg, self.model, self.tokenizer, mark=self.cold_start.mark)
        self.worker = ReplicaWorker(
            queue_for(self.cfg, self.redis), self.engine, self.tokenizer,
            model=self.model.name, owner=self.owner, price=self.model.price, bell_client=self.bell,
            reserved_slots=int(self.model.max_batch_size * self.cfg.batch.reserved_slot_fraction),
            storage=FileStorage(self.cfg.storage_url()), max_adapters=self.model.adapters.max_loaded,
            adapter_surcharge=self.model.adapters.surcharge, cold_start=self.cold_start,
            fmt=ChatFormat.of(self.tokenizer, self.cfg.model_path(self.model)),
        )  # fmt: skip
        self.worker.start()
        log.info("event=replica_ready model=%s engine=%s stages=%d", self.model.name, self.model.engine,
                 self.model.stages())  # fmt: skip

    async def check_health(self) -> None:
        if self._started.done() and self._started.exception() is not None:
            raise RuntimeError(f"engine failed to start: {self._started.exception()!r}")
        if self._started.done() and not (self.engine and self.engine.healthy() and self.worker and self.worker.alive()):
            raise RuntimeError("engine or worker loop stopped")
        try:
            await asyncio.wait_for(self.redis.ping(), timeout=2)
        except Exception as e:
            raise RuntimeError(f"replica cannot reach Redis: {type(e).__name__}") from None

    def record_autoscaling_stats(self) -> dict[str, float]:
        """This replica's load for ossfleet's autoscaling policy (see autoscaling/serve_policy.py).

        GPU utilization is left out, not zero, where there is no GPU.
        """
        from autoscaling.signals import gpu_utilization

        if self.worker is None:
            return {}
        gpu = gpu_utilization()
        if gpu is not None:
            metrics.gpu_utilization(self.model.name, self.owner, gpu)
        return replace(self.worker.load(), gpu_utilization=gpu).metrics()

    async def stats(self) -> dict[str, Any]:
        """Engine and worker counters (for operators and tests)."""
        ready = self._started.done() and self._started.exception() is None
        base = {"model": self.model.name, "owner": self.owner, "pid": os.getpid()}
        if not ready or self.engine is None or self.worker is None:
            return {**base, "ready": False}
        return {**base, "ready": True, **self.worker.load().metrics(), "cold_start": self.cold_start.as_dict()}

    async def __del__(self) -> None:
        # Ray Serve calls __del__ on graceful shutdown: stop pulling, finish or hand back.
        if self.worker is not None:
            await self.worker.drain(grace_s=30.0)
        if self.engine is not None:
            await self.engine.stop()
