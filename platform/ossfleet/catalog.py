"""The gpt-oss model catalog: real architectures, and the GPU plan they imply.

Sizes (layers, GPUs per replica, pipeline stages) come from here, never from
code elsewhere. :meth:`ModelSpec.plan` turns a spec and a GPU's memory into a
replica plan: how many pipeline stages (one GPU each), which layers each stage
holds, and how much memory is left on each for the KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3

# Share of a GPU's memory the engine may use; the rest is left to the CUDA
# context, the allocator's fragmentation and NCCL buffers.
GPU_MEMORY_UTILIZATION = 0.92
# Activations and workspace of one forward pass at the batch sizes we run.
RUNTIME_OVERHEAD_GIB = 0.75
# A stage that cannot keep at least this much KV cache would serve one short
# request at a time; we refuse such a plan rather than run it.
MIN_KV_CACHE_GIB = 0.5


class PlanError(ValueError):
    """A model cannot be placed on the given GPUs."""


@dataclass(frozen=True)
class ModelSpec:
    """The architecture of one gpt-oss model, as published by OpenAI."""

    name: str
    layers: int
    experts: int
    experts_per_token: int
    total_params: float
    active_params: float
    # Bytes of the released checkpoint: MXFP4 experts, everything else bf16.
    checkpoint_bytes: int
    hidden_size: int = 2880
    heads: int = 64
    kv_heads: int = 8
    head_dim: int = 64
    vocab_size: int = 201_088
    context_length: int = 131_072
    sliding_window: int = 128

    @property
    def embedding_bytes(self) -> int:
        """One of the two untied vocab matrices (embedding, LM head), in bf16."""
        return self.vocab_size * self.hidden_size * 2

    @property
    def layer_bytes(self) -> int:
        """One transformer block, from the checkpoint size less both vocab matrices."""
        return (self.checkpoint_bytes - 2 * self.embedding_bytes) // self.layers

    @property
    def full_attention_layers(self) -> int:
        # Layers alternate sliding-window (even) and full attention (odd).
        return self.layers // 2

    def kv_bytes_per_token(self, layers: int | None = None) -> int:
        """KV-cache bytes per token of context, in bf16, over ``layers`` full-attention layers."""
        n = self.full_attention_layers if layers is None else layers
        return 2 * self.kv_heads * self.head_dim * 2 * n

    def stage_bytes(self, layers_per_stage: tuple[int, ...]) -> tuple[int, ...]:
        """Weight bytes of each stage: its layers, plus the embedding (first) and LM head (last)."""
        out = []
        for i, n in enumerate(layers_per_stage):
            b = n * self.layer_bytes
            if i == 0:
                b += self.embedding_bytes
            if i == len(layers_per_stage) - 1:
                b += self.embedding_bytes
            out.append(b)
        return tuple(out)

    def plan(self, gpu_memory_gib: float, max_stages: int | None = None) -> ReplicaPlan:
        """The fewest pipeline stages (one GPU each) that fit this model on GPUs of this size."""
        if gpu_memory_gib <= 0:
            raise PlanError(f"gpu_memory_gib must be positive, got {gpu_memory_gib}")
        usable = gpu_memory_gib * GPU_MEMORY_UTILIZATION * GIB - RUNTIME_OVERHEAD_GIB * GIB
        limit = min(self.layers, max_stages or self.layers)
        for stages in range(1, limit + 1):
            split = split_layers(self.layers, stages)
            weights = self.stage_bytes(split)
            if max(weights) + MIN_KV_CACHE_GIB * GIB <= usable:
                kv = tuple(int(usable - w) for w in weights)
                return ReplicaPlan(self.name, gpu_memory_gib, stages, split, weights, kv)
        raise PlanError(
            f"{self.name} does not fit on {limit} GPU(s) of {gpu_memory_gib:g} GiB: "
            f"its checkpoint is {self.checkpoint_bytes / GIB:.1f} GiB and each GPU offers "
            f"{max(usable, 0) / GIB:.1f} GiB after overheads"
        )


@dataclass(frozen=True)
class ReplicaPlan:
    """How one replica of a model is laid out on GPUs."""

    model: str
    gpu_memory_gib: float
    stages: int
    layers_per_stage: tuple[int, ...]
    weight_bytes_per_stage: tuple[int, ...]
    kv_cache_bytes_per_stage: tuple[int, ...]

    @property
    def gpus(self) -> int:
        return self.stages

    def layer_ranges(self) -> list[range]:
        """The global layer indices each stage holds."""
        out, start = [], 0
        for n in self.layers_per_stage:
            out.append(range(start, start + n))
            start += n
        return out


def split_layers(layers: int, stages: int) -> tuple[int, ...]:
    """Cut ``layers`` into ``stages`` contiguous runs whose sizes differ by at most one.

    The extra layers go to the middle stages, since the first and last stages
    also hold the embedding and the LM head.
    """
    if not 1 <= stages <= layers:
        raise PlanError(f"cannot cut {layers} layers into {stages} stages")
    base, extra = divmod(layers, stages)
    sizes = [base] * stages
    # Middle-out order: stages 1..S-2 first, then the last, then the first.
    order = [*range(1, stages - 1), stages - 1, 0] if stages > 2 else list(range(stages))[::-1]
    for i in order[:extra]:
        sizes[i] += 1
    return tuple(sizes)


GPT_OSS_20B = ModelSpec(
    name="gpt-oss-20b",
    layers=24,
    experts=32,
    experts_per_token=4,
    total_params=20.9e9,
    active_params=3.6e9,
    checkpoint_bytes=13_800_000_000,  # ~12.9 GiB; fits a 16 GB GPU
)

GPT_OSS_120B = ModelSpec(
    name="gpt-oss-120b",
    layers=36,
    experts=128,
    experts_per_token=4,
    total_params=116.8e9,
    active_params=5.1e9,
    checkpoint_bytes=65_300_000_000,  # ~60.8 GiB; one 80 GB GPU or a pipeline
)

CATALOG: dict[str, ModelSpec] = {s.name: s for s in (GPT_OSS_20B, GPT_OSS_120B)}
