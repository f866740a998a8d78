"""Build the engine a model's config asks for (replicas and dedicated batch actors)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ossfleet.chatformat import ChatFormat
from ossfleet.config import ModelConfig, PlatformConfig
from ossfleet.engine.base import Engine
from ossfleet.harmony import SpecialIds

if TYPE_CHECKING:
    from ossfleet.engine.vllm import VllmOptions


async def build_engine(
    cfg: PlatformConfig, m: ModelConfig, tokenizer: Any, mark: Callable[[str], None] | None = None
) -> Engine:
    """The engine a model's config asks for, loaded and started; ``mark`` is told when it is built
    (``engine_built``: ossfleet's engine has read its weights) and started (``engine_started``)."""
    path = cfg.model_path(m)
    engine: Engine
    if m.engine != "stub":
        from ossfleet.engine.cuda_check import check_cuda_driver

        check_cuda_driver(m.device)
    if m.engine == "stub":
        from ossfleet.engine.stub import StubEngine

        fmt = ChatFormat.of(tokenizer, path)
        if fmt.family.harmony:  # a final message; the other families answer in plain text
            ids = SpecialIds.of(tokenizer)
            header = [ids.channel, *tokenizer.encode("final", add_special_tokens=False), ids.message]
        else:
            header = []
        engine = StubEngine(
            header, fmt.stop[0], max_slots=m.max_batch_size, max_context=m.max_context,
            token_delay_s=m.stub_token_delay_s,
        )  # fmt: skip
    elif m.engine == "mii":
        from ossfleet.engine.mii import check_mii

        check_mii(path)  # raises: no model ossfleet serves runs on MII today (see engine/mii.py)
        raise RuntimeError("unreachable")
    elif m.engine == "vllm":
        from ossfleet.engine.vllm import VllmEngine

        engine = VllmEngine(path, vllm_options(m))
    elif m.engine == "transformers" and m.stages() == 1:
        from ossfleet.engine.hf import TransformersEngine

        engine = TransformersEngine(
            path, device=m.device, dtype=m.dtype, max_batch_size=m.max_batch_size,
            max_context=m.max_context, torch_threads=m.torch_threads,
        )  # fmt: skip
    else:
        engine = await asyncio.to_thread(_batched_engine, cfg, m, tokenizer)
    if mark is not None:
        mark("engine_built")
    await engine.start()
    if mark is not None:
        mark("engine_started")
    return engine


def vllm_options(m: ModelConfig) -> VllmOptions:
    """What a model's config asks of its vLLM engine."""
    from ossfleet.engine.vllm import VllmOptions

    v = m.vllm
    return VllmOptions(
        dtype=m.dtype if m.dtype != "auto" else ("auto" if m.device.startswith("cuda") else "bfloat16"),
        max_slots=m.max_batch_size, max_context=m.max_context,
        headroom_slots=max(1, m.max_batch_size // 8) if v.headroom_slots is None else v.headroom_slots,
        tensor_parallel_size=v.tensor_parallel_size, pipeline_parallel_size=v.pipeline_parallel_size,
        gpu_memory_utilization=v.gpu_memory_utilization, kv_cache_gib=v.kv_cache_gib,
        prefix_caching=v.prefix_caching, enforce_eager=v.enforce_eager or not m.device.startswith("cuda"),
        torch_threads=m.torch_threads, device=m.device,
    )  # fmt: skip


def kv_cache_tokens(m: ModelConfig) -> int | None:
    """The KV cache the engine allocates, in tokens: as configured; on a GPU, what the catalog's plan
    leaves after the weights (at most every slot's whole context); None (every slot's whole context)
    on a CPU, which has no GPU memory to plan."""
    if m.kv_cache_tokens is not None:
        return m.kv_cache_tokens
    if m.device.startswith("cuda"):
        return min(m.plan().kv_cache_tokens, m.max_batch_size * m.max_context)
    return None


def _batched_engine(cfg: PlatformConfig, m: ModelConfig, tokenizer: Any) -> Engine:
    import torch
    from transformers import AutoConfig

    from ossfleet.engine.batched import BatchedEngine
    from ossfleet.engine.executors import LocalExecutor, RayExecutor, ray_stage_actors
    from ossfleet.engine.stages import PipelineStage

    if m.torch_threads:
        torch.set_num_threads(m.torch_threads)
    path = cfg.model_path(m)
    layers = AutoConfig.from_pretrained(path).num_hidden_layers
    ranges = m.stage_ranges(layers)
    executor: Any
    if len(ranges) == 1:
        executor = LocalExecutor(
            [PipelineStage(path, 0, layers, dtype=m.torch_dtype(), device=m.device, weights=m.weights)]
        )
    else:
        from ray.util import get_current_placement_group

        pg = get_current_placement_group()
        if pg is None:
            raise RuntimeError(f"model {m.name!r} has {len(ranges)} stages but its replica has no placement group")
        # Stage i sits in bundle i; bundle 0 also holds this replica (see deployments/app.py).
        actors = ray_stage_actors(
            str(path), ranges, pg, first_bundle=0, num_gpus=m.num_gpus, num_cpus=m.stage_cpus,
            dtype=m.torch_dtype(), device=m.device, weights=m.weights,
        )  # fmt: skip
        executor = RayExecutor(actors)
    return BatchedEngine(
        executor, max_batch_size=m.max_batch_size, micro_batches=m.micro_batch_count(),
        max_context=m.max_context, torch_threads=m.torch_threads, kv_cache_tokens=kv_cache_tokens(m),
        max_step_tokens=m.max_step_tokens,
    )  # fmt: skip
