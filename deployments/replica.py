"""A model replica deployment: one engine and the Redis pull loop that feeds it.

The replica receives no requests through Ray Serve: it pulls them from Redis
(see ``ossfleet.worker``). Ray Serve gives it placement (a GPU, or a placement
group for pipeline groups), health checks, restarts and scaling.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from ray import serve

from ossfleet import metrics
from ossfleet.config import ModelConfig, PlatformConfig, parse_config
from ossfleet.engine.base import Engine
from ossfleet.gateway import queue_for
from ossfleet.harmony import SpecialIds
from ossfleet.redisdb import connect_async
from ossfleet.worker import ReplicaWorker

log = logging.getLogger("ossfleet.replica")


def _dtype(m: ModelConfig) -> str:
    if m.dtype != "auto":
        return m.dtype
    return "bfloat16" if m.device.startswith("cuda") else "float32"


async def build_engine(cfg: PlatformConfig, m: ModelConfig, tokenizer: Any) -> Engine:
    """The engine a model's config asks for, loaded and started."""
    path = cfg.model_path(m)
    engine: Engine
    if m.engine == "stub":
        from ossfleet.engine.stub import StubEngine

        ids = SpecialIds.of(tokenizer)
        header = [ids.channel, *tokenizer.encode("final", add_special_tokens=False), ids.message]
        engine = StubEngine(
            header, ids.return_, max_slots=m.max_batch_size, max_context=m.max_context,
            token_delay_s=m.stub_token_delay_s,
        )  # fmt: skip
    elif m.engine == "mii":
        from ossfleet.engine.mii import check_mii

        check_mii(path)  # raises: no model ossfleet serves runs on MII today (see engine/mii.py)
        raise RuntimeError("unreachable")
    elif m.engine == "transformers" and m.stages() == 1:
        from ossfleet.engine.hf import TransformersEngine

        engine = TransformersEngine(
            path, device=m.device, dtype=m.dtype, max_batch_size=m.max_batch_size,
            max_context=m.max_context, torch_threads=m.torch_threads,
        )  # fmt: skip
    else:
        engine = await asyncio.to_thread(_batched_engine, cfg, m, tokenizer)
    await engine.start()
    return engine


def _batched_engine(cfg: PlatformConfig, m: ModelConfig, tokenizer: Any) -> Engine:
    import torch
    from transformers import AutoConfig

    from ossfleet.engine.batched import BatchedEngine, LocalExecutor, RayExecutor, ray_stage_actors
    from ossfleet.engine.stages import PipelineStage

    if m.torch_threads:
        torch.set_num_threads(m.torch_threads)
    path = cfg.model_path(m)
    layers = AutoConfig.from_pretrained(path).num_hidden_layers
    ranges = m.stage_ranges(layers)
    executor: Any
    if len(ranges) == 1:
        executor = LocalExecutor([PipelineStage(path, 0, layers, dtype=_dtype(m), device=m.device)])
    else:
        from ray.util import get_current_placement_group

        pg = get_current_placement_group()
        if pg is None:
            raise RuntimeError(f"model {m.name!r} has {len(ranges)} stages but its replica has no placement group")
        # Stage i sits in bundle i; bundle 0 also holds this replica (see deployments/app.py).
        actors = ray_stage_actors(
            str(path), ranges, pg, first_bundle=0, num_gpus=m.num_gpus, num_cpus=m.stage_cpus,
            dtype=_dtype(m), device=m.device,
        )  # fmt: skip
        executor = RayExecutor(actors)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return BatchedEngine(
        executor, max_batch_size=m.max_batch_size, micro_batches=m.micro_batch_count(),
        max_context=m.max_context, pad_id=pad, torch_threads=m.torch_threads,
    )  # fmt: skip


@serve.deployment(name="ModelReplica", graceful_shutdown_timeout_s=60, health_check_period_s=5)
class ModelReplica:
    def __init__(self, config: dict[str, Any], model: str, redis_url: str) -> None:
        from transformers import AutoTokenizer

        cfg = parse_config(config, config.get("source") or "<serve args>")
        m = cfg.model(model)
        if m is None:
            raise ValueError(f"model {model!r} is not in the config")
        self.model = m
        self.cfg = cfg
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model_path(m))
        self.redis = connect_async(redis_url, cfg.redis)
        self.bell = connect_async(redis_url, cfg.redis)
        self.owner = f"{m.name}@{socket.gethostname()}:{os.getpid()}"
        self.engine: Engine | None = None
        self.worker: ReplicaWorker | None = None
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        self.engine = await build_engine(self.cfg, self.model, self.tokenizer)
        self.worker = ReplicaWorker(
            queue_for(self.cfg, self.redis), self.engine, self.tokenizer,
            model=self.model.name, owner=self.owner, price=self.model.price, bell_client=self.bell,
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
        stats = {k: v for k, v in self.worker.load().items() if k != "served"}
        gpu = gpu_utilization()
        if gpu is not None:
            stats["gpu_utilization"] = gpu
            metrics.gpu_utilization(self.model.name, self.owner, gpu)
        return stats

    async def stats(self) -> dict[str, Any]:
        """Engine and worker counters (for operators and tests)."""
        ready = self._started.done() and self._started.exception() is None
        base = {"model": self.model.name, "owner": self.owner, "pid": os.getpid()}
        if not ready or self.engine is None or self.worker is None:
            return {**base, "ready": False}
        return {**base, "ready": True, **self.worker.load()}

    async def __del__(self) -> None:
        # Ray Serve calls __del__ on graceful shutdown: stop pulling, finish or hand back.
        if self.worker is not None:
            await self.worker.drain(grace_s=30.0)
        if self.engine is not None:
            await self.engine.stop()
