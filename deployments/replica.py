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

from ossfleet.config import ModelConfig, PlatformConfig, parse_config
from ossfleet.engine.base import Engine
from ossfleet.gateway import queue_for
from ossfleet.harmony import SpecialIds
from ossfleet.redisdb import connect_async
from ossfleet.worker import ReplicaWorker

log = logging.getLogger("ossfleet.replica")


def build_engine(cfg: PlatformConfig, m: ModelConfig, tokenizer: Any) -> Engine:
    """The engine a model's config asks for."""
    if m.engine == "stub":
        from ossfleet.engine.stub import StubEngine

        ids = SpecialIds.of(tokenizer)
        header = [ids.channel, *tokenizer.encode("final", add_special_tokens=False), ids.message]
        return StubEngine(header, ids.return_, max_slots=m.max_batch_size, max_context=m.max_context)
    if m.engine == "mii":
        raise RuntimeError(
            f"model {m.name!r}: the DeepSpeed-MII backend does not support gpt-oss (its FastGen has no gpt_oss "
            "architecture) and needs CUDA; use engine: transformers"
        )
    from ossfleet.engine.hf import TransformersEngine

    return TransformersEngine(
        cfg.model_path(m),
        device=m.device,
        dtype=m.dtype,
        max_batch_size=m.max_batch_size,
        max_context=m.max_context,
        torch_threads=m.torch_threads,
    )


@serve.deployment(name="ModelReplica", graceful_shutdown_timeout_s=60, health_check_period_s=5)
class ModelReplica:
    def __init__(self, config: dict[str, Any], model: str, redis_url: str) -> None:
        from transformers import AutoTokenizer

        cfg = parse_config(config, config.get("source") or "<serve args>")
        m = cfg.model(model)
        if m is None:
            raise ValueError(f"model {model!r} is not in the config")
        self.model = m
        tokenizer = AutoTokenizer.from_pretrained(cfg.model_path(m))
        self.engine = build_engine(cfg, m, tokenizer)
        self.redis = connect_async(redis_url, cfg.redis)
        self.bell = connect_async(redis_url, cfg.redis)
        owner = f"{m.name}@{socket.gethostname()}:{os.getpid()}"
        self.worker = ReplicaWorker(
            queue_for(cfg, self.redis), self.engine, tokenizer,
            model=m.name, owner=owner, price=m.price, bell_client=self.bell,
        )  # fmt: skip
        self._started = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        await self.engine.start()
        self.worker.start()
        log.info("event=replica_ready model=%s", self.model.name)

    async def check_health(self) -> None:
        if self._started.done() and self._started.exception() is not None:
            raise RuntimeError(f"engine failed to start: {self._started.exception()!r}")
        if self._started.done() and not (self.engine.healthy() and self.worker.alive()):
            raise RuntimeError("engine or worker loop stopped")
        try:
            await asyncio.wait_for(self.redis.ping(), timeout=2)
        except Exception as e:
            raise RuntimeError(f"replica cannot reach Redis: {type(e).__name__}") from None

    async def stats(self) -> dict[str, Any]:
        s = self.engine.stats()
        return {
            "model": self.model.name,
            "ready": self._started.done() and self._started.exception() is None,
            "running": s.running,
            "max_slots": s.max_slots,
            "served": self.worker.served,
            "tokens_per_s": s.tokens_per_s,
        }

    async def __del__(self) -> None:
        # Ray Serve calls __del__ on graceful shutdown: stop pulling, finish or hand back.
        await self.worker.drain(grace_s=30.0)
        await self.engine.stop()
