"""How the engine runs a step's forward pass through the model's stages: in this process
(:class:`LocalExecutor`), or over stage actors in a placement group (:class:`RayExecutor`, one actor per
stage; activations go actor to actor as Ray objects, never through the driver)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from ossfleet.engine.kvcache import StepBatch


class StageExecutor(Protocol):
    """Runs one packed step through every stage, returning the logits of its sampled positions."""

    def init_cache(self, num_blocks: int, block_size: int) -> int:
        """Allocate every stage's KV cache; returns the bytes of the largest."""

    def submit(self, step: StepBatch) -> Any:
        """Start a step; returns a handle for :meth:`result`. It may run the step before returning."""

    def result(self, handle: Any) -> torch.Tensor:
        """The step's logits ``[len(step.sample_index), V]``; blocks until they exist."""

    def add_adapter(self, key: str, config: dict[str, Any], data: bytes) -> int:
        """Load a LoRA adapter on every stage (each keeps its layers' weights); returns the bytes held."""

    def remove_adapter(self, key: str) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Stages in this process, run one after another when a step is submitted."""

    def __init__(self, stages: Sequence[Any]) -> None:
        self.stages = list(stages)

    def init_cache(self, num_blocks: int, block_size: int) -> int:
        return max(int(s.init_cache(num_blocks, block_size)) for s in self.stages)

    def submit(self, step: StepBatch) -> torch.Tensor:
        h: torch.Tensor | None = None
        for s in self.stages:
            h = s.forward(step, h)
        assert h is not None
        return h

    def result(self, handle: Any) -> torch.Tensor:
        return handle

    def add_adapter(self, key: str, config: dict[str, Any], data: bytes) -> int:
        return sum(int(s.add_adapter(key, config, data)) for s in self.stages)

    def remove_adapter(self, key: str) -> None:
        for s in self.stages:
            s.remove_adapter(key)

    def close(self) -> None:
        self.stages = []


class RayExecutor:
    """Stages as Ray actors; activations go actor to actor as Ray objects, never through the driver.

    Each actor runs its calls in order, so while stage 2 works on one plan's
    step, stage 1 is free for the next plan's.
    """

    def __init__(self, actors: Sequence[Any]) -> None:
        self.actors = list(actors)

    def init_cache(self, num_blocks: int, block_size: int) -> int:
        import ray

        return max(ray.get([a.init_cache.remote(num_blocks, block_size) for a in self.actors]))

    def submit(self, step: StepBatch) -> Any:
        import ray

        step_ref = ray.put(step)
        ref: Any = None
        for a in self.actors:
            ref = a.forward.remote(step_ref, ref)
        return ref

    def result(self, handle: Any) -> torch.Tensor:
        import ray

        return ray.get(handle)

    def add_adapter(self, key: str, config: dict[str, Any], data: bytes) -> int:
        import ray

        ref = ray.put(data)
        return sum(ray.get([a.add_adapter.remote(key, config, ref) for a in self.actors]))

    def remove_adapter(self, key: str) -> None:
        import ray

        ray.get([a.remove_adapter.remote(key) for a in self.actors])

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


def ray_stage_actors(
    path: str,
    stage_ranges: Sequence[tuple[int, int]],
    placement_group: Any,
    *,
    first_bundle: int = 0,
    num_gpus: float = 1.0,
    num_cpus: float = 1.0,
    dtype: str = "float32",
    device: str = "cpu",
    weights: str = "bf16",
) -> list[Any]:
    """One stage actor per bundle of ``placement_group``, stage i in bundle ``first_bundle + i``."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from ossfleet.engine.stages import PipelineStage

    remote: Any = ray.remote(PipelineStage)
    actors = []
    for i, (a, b) in enumerate(stage_ranges):
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=placement_group, placement_group_bundle_index=first_bundle + i
        )
        opts = {"num_gpus": num_gpus, "num_cpus": num_cpus, "scheduling_strategy": strategy}
        actors.append(remote.options(**opts).remote(path, a, b, dtype=dtype, device=device, weights=weights))
    # Fail fast (with the actor's own error) if a stage cannot load.
    ray.get([act.layer_range.remote() for act in actors])
    return actors
