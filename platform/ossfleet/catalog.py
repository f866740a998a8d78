"""The model catalog: real architectures (gpt-oss, Llama 3.x, Gemma 2, Mixtral), and the GPU plan they imply.

Sizes (layers, GPUs per replica, pipeline stages) come from here, never from
code elsewhere. :meth:`ModelSpec.plan` turns a spec, a GPU's memory, the
weight format the engine keeps in memory and the longest context into a
replica plan: how many pipeline stages (one GPU each), which layers each
stage holds, the bytes each stage's weights occupy, and the KV cache (bytes
and tokens) that is left.

The plan counts what the engine actually holds (``bench/residency.py``
checks it against the stage's tensors):

- ``weights: bf16``: every tensor in the engine's dtype, the MXFP4 experts
  dequantized as they load (about 3.8x the packed experts);
- ``weights: mxfp4``: the experts stay packed (a byte per two e2m1 values and
  one e8m0 scale byte per 32 values: 4.25 bits a weight), everything else in
  the engine's dtype;
- norms in float32 for gpt-oss (transformers keeps them so), in the
  engine's dtype for the other families;
- the other families as released: every tensor in bf16 (``weights: bf16``
  only); a tied embedding (Gemma 2) counted once on a one-stage replica,
  once on each end of a pipeline;
- a KV pool of the same size for every layer of a stage (the engine's paged
  cache does not yet shrink sliding-window layers to their window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ossfleet.families import FAMILIES, family_of_model_type

GIB = 1024**3

WeightFormat = Literal["bf16", "mxfp4"]
WEIGHT_FORMATS: tuple[str, ...] = ("bf16", "mxfp4")
# MXFP4 bytes per expert weight: half a byte of e2m1, plus one scale byte per 32 values.
MXFP4_BYTES_PER_WEIGHT = 0.5 + 1 / 32

# Share of a GPU's memory the engine may use; the rest is left to the CUDA
# context, the allocator's fragmentation and NCCL buffers.
GPU_MEMORY_UTILIZATION = 0.92
# Activations and workspace of one forward pass at the batch sizes we run.
RUNTIME_OVERHEAD_GIB = 0.75


class PlanError(ValueError):
    """A model cannot be placed on the given GPUs."""


@dataclass(frozen=True)
class ModelSpec:
    """The architecture of one model, as its authors published it (``experts`` 0 for a dense model)."""

    name: str
    layers: int
    experts: int
    experts_per_token: int
    total_params: float
    active_params: float
    hidden_size: int = 2880
    intermediate_size: int = 2880
    heads: int = 64
    kv_heads: int = 8
    head_dim: int = 64
    vocab_size: int = 201_088
    context_length: int = 131_072
    sliding_window: int = 128
    family: str = "gpt-oss"
    tied_embeddings: bool = False
    hf_repo: str = ""  # where the released checkpoint is published

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; one of {sorted(FAMILIES)}")

    @classmethod
    def from_hf_config(cls, cfg: Any, name: str = "checkpoint") -> ModelSpec:
        """The spec of a checkpoint from its transformers config (tiny checkpoints, for the planner's checks)."""
        return cls(
            name=name, layers=cfg.num_hidden_layers, experts=getattr(cfg, "num_local_experts", 0) or 0,
            experts_per_token=getattr(cfg, "num_experts_per_tok", 0) or 0, total_params=0.0, active_params=0.0,
            hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size, heads=cfg.num_attention_heads,
            kv_heads=cfg.num_key_value_heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
            vocab_size=cfg.vocab_size, context_length=cfg.max_position_embeddings,
            sliding_window=getattr(cfg, "sliding_window", None) or 0,
            family=family_of_model_type(cfg.model_type).name,
            tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        )  # fmt: skip

    # -- parameters, from the architecture ------------------------------------------------

    @property
    def expert_weights_per_layer(self) -> int:
        """The experts' matrices: gate_up (H x 2I) and down (I x H), per expert; a dense model's MLP."""
        return max(self.experts, 1) * 3 * self.hidden_size * self.intermediate_size

    @property
    def norms_per_layer(self) -> int:
        return 4 if self.family == "gemma2" else 2  # Gemma 2 norms after attention and the MLP too

    @property
    def dense_params_per_layer(self) -> int:
        """Everything else in a layer except its norms: attention, and for gpt-oss sinks, router and
        expert biases; Mixtral's router."""
        h, q, kv = self.hidden_size, self.heads * self.head_dim, self.kv_heads * self.head_dim
        if self.family != "gpt-oss":
            return h * q + 2 * h * kv + q * h + self.experts * h  # no biases; a router where there are experts
        attention = h * q + q + 2 * (h * kv + kv) + q * h + h + self.heads
        router = self.experts * h + self.experts
        expert_bias = self.experts * (2 * self.intermediate_size + h)
        return attention + router + expert_bias

    @property
    def vocab_matrices(self) -> int:
        return 1 if self.tied_embeddings else 2

    @property
    def params(self) -> int:
        norms = self.norms_per_layer * self.hidden_size
        per_layer = self.expert_weights_per_layer + self.dense_params_per_layer + norms
        return self.layers * per_layer + self.vocab_matrices * self.vocab_size * self.hidden_size + self.hidden_size

    # -- bytes ----------------------------------------------------------------------------

    def embedding_bytes(self, dtype_bytes: int = 2) -> int:
        """One vocab matrix (the embedding, or the untied LM head)."""
        return self.vocab_size * self.hidden_size * dtype_bytes

    def layer_bytes(self, weights: WeightFormat | None = None, dtype_bytes: int = 2) -> int:
        """One transformer block as the engine holds it in memory (default: as released)."""
        weights = weights or self.released_weights
        self.check_weights(weights)
        ew = self.expert_weights_per_layer
        experts = int(ew * MXFP4_BYTES_PER_WEIGHT) if weights == "mxfp4" else ew * dtype_bytes
        norm_bytes = 4 if self.family == "gpt-oss" else dtype_bytes
        norms = self.norms_per_layer * self.hidden_size * norm_bytes
        return experts + self.dense_params_per_layer * dtype_bytes + norms

    @property
    def released_weights(self) -> WeightFormat:
        """How the released checkpoint stores the experts: MXFP4 for gpt-oss, bf16 for the others."""
        return "mxfp4" if self.family == "gpt-oss" else "bf16"

    @property
    def checkpoint_bytes(self) -> int:
        """Bytes of the released checkpoint (gpt-oss: MXFP4 experts, everything else bf16): the download."""
        layers = self.layers * self.layer_bytes(self.released_weights)
        return layers + self.vocab_matrices * self.embedding_bytes() + self.hidden_size * 4

    def check_weights(self, weights: str) -> None:
        check_weights(weights)
        allowed = FAMILIES[self.family].weight_formats
        if weights not in allowed:
            raise PlanError(
                f"{self.name} is released in {self.released_weights} and served as such: weights must be one of "
                f"{list(allowed)}, got {weights!r}"
            )

    def kv_bytes_per_token(self, layers: int | None = None, dtype_bytes: int = 2) -> int:
        """KV-cache bytes per token of context over ``layers`` layers (default: all)."""
        n = self.layers if layers is None else layers
        return 2 * self.kv_heads * self.head_dim * dtype_bytes * n

    def stage_bytes(
        self, layers_per_stage: tuple[int, ...], weights: WeightFormat | None = None, dtype_bytes: int = 2
    ) -> tuple[int, ...]:
        """Weight bytes of each stage: its layers, plus the embedding (first) and the LM head (last).
        (The last stage's final norm, 4 x hidden_size bytes, is left out, as Terraform's sizing does.)"""
        weights = weights or self.released_weights
        out = []
        last = len(layers_per_stage) - 1
        for i, n in enumerate(layers_per_stage):
            b = n * self.layer_bytes(weights, dtype_bytes)
            if i == 0:
                b += self.embedding_bytes(dtype_bytes)
            if i == last and not (self.tied_embeddings and last == 0):  # tied, one stage: the one matrix
                b += self.embedding_bytes(dtype_bytes)
            out.append(b)
        return tuple(out)

    # -- the plan -------------------------------------------------------------------------

    def plan(
        self,
        gpu_memory_gib: float,
        max_stages: int | None = None,
        *,
        weights: WeightFormat | None = None,
        max_context: int | None = None,
        dtype_bytes: int = 2,
    ) -> ReplicaPlan:
        """The fewest pipeline stages (one GPU each) on which every stage holds its weights and the
        KV cache of at least one request of ``max_context`` tokens (default: the model's context)."""
        weights = weights or self.released_weights
        self.check_weights(weights)
        if gpu_memory_gib <= 0:
            raise PlanError(f"gpu_memory_gib must be positive, got {gpu_memory_gib}")
        limit = min(self.layers, max_stages or self.layers)
        for stages in range(1, limit + 1):
            plan = self._layout(gpu_memory_gib, stages, weights, max_context, dtype_bytes)
            if plan.kv_cache_tokens >= plan.max_context:
                return plan
        raise self._refusal(gpu_memory_gib, limit, weights, max_context, dtype_bytes)

    def plan_stages(
        self,
        gpu_memory_gib: float,
        stages: int,
        *,
        weights: WeightFormat | None = None,
        max_context: int | None = None,
        dtype_bytes: int = 2,
    ) -> ReplicaPlan:
        """The plan for a configured stage count; refused, with the numbers, if a stage does not fit."""
        weights = weights or self.released_weights
        self.check_weights(weights)
        if gpu_memory_gib <= 0:
            raise PlanError(f"gpu_memory_gib must be positive, got {gpu_memory_gib}")
        plan = self._layout(gpu_memory_gib, stages, weights, max_context, dtype_bytes)
        if plan.kv_cache_tokens < plan.max_context:
            raise self._refusal(gpu_memory_gib, stages, weights, max_context, dtype_bytes)
        return plan

    def _layout(
        self, gib: float, stages: int, weights: WeightFormat, max_context: int | None, dtype_bytes: int
    ) -> ReplicaPlan:
        context = self.context_length if max_context is None else max_context
        usable = int(gib * GPU_MEMORY_UTILIZATION * GIB - RUNTIME_OVERHEAD_GIB * GIB)
        split = split_layers(self.layers, stages)
        wb = self.stage_bytes(split, weights, dtype_bytes)
        kv = tuple(max(usable - w, 0) for w in wb)
        tokens = min(k // self.kv_bytes_per_token(n, dtype_bytes) for k, n in zip(kv, split, strict=True))
        return ReplicaPlan(self.name, gib, weights, context, stages, split, wb, kv, tokens)

    def _refusal(
        self, gib: float, stages: int, weights: WeightFormat, max_context: int | None, dtype_bytes: int
    ) -> PlanError:
        p = self._layout(gib, stages, weights, max_context, dtype_bytes)
        usable = int(gib * GPU_MEMORY_UTILIZATION * GIB - RUNTIME_OVERHEAD_GIB * GIB)
        need = p.max_context * self.kv_bytes_per_token(dtype_bytes=dtype_bytes)
        return PlanError(
            f"{self.name} ({weights} weights) does not fit on {stages} GPU(s) of {gib:g} GiB: its weights take "
            f"{sum(p.weight_bytes_per_stage) / GIB:.1f} GiB ({max(p.weight_bytes_per_stage) / GIB:.1f} GiB on the "
            f"largest of {stages} stages), each GPU offers {max(usable, 0) / GIB:.1f} GiB after overheads, and the "
            f"KV cache of one {p.max_context}-token request needs {need / GIB:.2f} GiB over all layers (the "
            f"tightest stage holds {p.kv_cache_tokens} tokens); use larger or more GPUs, "
            + ("weights: mxfp4, " if "mxfp4" in FAMILIES[self.family].weight_formats else "")
            + "or a shorter max_context"
        )


def check_weights(weights: str) -> None:
    if weights not in WEIGHT_FORMATS:
        raise PlanError(f"weights must be one of {list(WEIGHT_FORMATS)}, got {weights!r}")


@dataclass(frozen=True)
class ReplicaPlan:
    """How one replica of a model is laid out on GPUs, and what each stage holds."""

    model: str
    gpu_memory_gib: float
    weights: str
    max_context: int
    stages: int
    layers_per_stage: tuple[int, ...]
    weight_bytes_per_stage: tuple[int, ...]
    kv_cache_bytes_per_stage: tuple[int, ...]
    # Tokens of context the replica's KV cache holds (the least any stage can keep).
    kv_cache_tokens: int

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

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "gpu_memory_gib": self.gpu_memory_gib, "weights": self.weights,
            "max_context": self.max_context, "stages": self.stages,
            "layers_per_stage": list(self.layers_per_stage),
            "weight_gib_per_stage": [round(b / GIB, 2) for b in self.weight_bytes_per_stage],
            "kv_cache_gib_per_stage": [round(b / GIB, 2) for b in self.kv_cache_bytes_per_stage],
            "weight_bytes_per_stage": list(self.weight_bytes_per_stage),
            "kv_cache_tokens": self.kv_cache_tokens,
        }  # fmt: skip


@dataclass(frozen=True)
class EngineChoice:
    """Which engine serves a layout, and why."""

    engine: str  # "vllm" | "batched"
    reason: str


def choose_engine(plan: ReplicaPlan, gpus_per_node: int) -> EngineChoice:
    """vLLM for a replica whose GPUs fit one node (its own tensor/pipeline parallelism there); ossfleet's
    batched engine for a pipeline whose stages span nodes (vLLM pipelines only within a node here)."""
    if gpus_per_node < 1:
        raise PlanError(f"gpus_per_node must be at least 1, got {gpus_per_node}")
    if plan.stages <= gpus_per_node:
        how = "one GPU" if plan.stages == 1 else f"pipeline_parallel_size={plan.stages} inside the node"
        return EngineChoice(
            "vllm",
            f"the replica's {plan.stages} GPU(s) fit one node of {gpus_per_node}: vLLM serves it ({how}), with its "
            "fused MXFP4 MoE kernels, CUDA graphs and per-tenant prefix caching",
        )
    return EngineChoice(
        "batched",
        f"its {plan.stages} stages span nodes of {gpus_per_node} GPUs: ossfleet's batched engine runs pipelines "
        "across nodes (one stage actor per GPU, Ray placement group)",
    )


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
    hf_repo="openai/gpt-oss-20b",
    layers=24,
    experts=32,
    experts_per_token=4,
    total_params=20.9e9,
    active_params=3.6e9,
)

GPT_OSS_120B = ModelSpec(
    name="gpt-oss-120b",
    hf_repo="openai/gpt-oss-120b",
    layers=36,
    experts=128,
    experts_per_token=4,
    total_params=116.8e9,
    active_params=5.1e9,
)

# The families users compare gpt-oss with, from each release's config.json (Llama 3.1: 128k context, RoPE
# scaled llama3-style; Gemma 2: 8k context, 4k sliding window on every other layer, tied embeddings; Mixtral:
# 8 experts, 2 per token). total_params/active_params as their model cards give them.
LLAMA_3_1_8B = ModelSpec(
    name="llama-3.1-8b", layers=32, experts=0, experts_per_token=0, total_params=8.03e9, active_params=8.03e9,
    hidden_size=4096, intermediate_size=14336, heads=32, kv_heads=8, head_dim=128, vocab_size=128_256,
    context_length=131_072, sliding_window=0, family="llama", hf_repo="meta-llama/Llama-3.1-8B-Instruct",
)  # fmt: skip
LLAMA_3_1_70B = ModelSpec(
    name="llama-3.1-70b", layers=80, experts=0, experts_per_token=0, total_params=70.6e9, active_params=70.6e9,
    hidden_size=8192, intermediate_size=28672, heads=64, kv_heads=8, head_dim=128, vocab_size=128_256,
    context_length=131_072, sliding_window=0, family="llama", hf_repo="meta-llama/Llama-3.1-70B-Instruct",
)  # fmt: skip
GEMMA_2_9B = ModelSpec(
    name="gemma-2-9b", layers=42, experts=0, experts_per_token=0, total_params=9.24e9, active_params=9.24e9,
    hidden_size=3584, intermediate_size=14336, heads=16, kv_heads=8, head_dim=256, vocab_size=256_000,
    context_length=8192, sliding_window=4096, family="gemma2", tied_embeddings=True, hf_repo="google/gemma-2-9b-it",
)  # fmt: skip
GEMMA_2_27B = ModelSpec(
    name="gemma-2-27b", layers=46, experts=0, experts_per_token=0, total_params=27.2e9, active_params=27.2e9,
    hidden_size=4608, intermediate_size=36864, heads=32, kv_heads=16, head_dim=128, vocab_size=256_000,
    context_length=8192, sliding_window=4096, family="gemma2", tied_embeddings=True, hf_repo="google/gemma-2-27b-it",
)  # fmt: skip
MIXTRAL_8X7B = ModelSpec(
    name="mixtral-8x7b", layers=32, experts=8, experts_per_token=2, total_params=46.7e9, active_params=12.9e9,
    hidden_size=4096, intermediate_size=14336, heads=32, kv_heads=8, head_dim=128, vocab_size=32_000,
    context_length=32_768, sliding_window=0, family="mixtral", hf_repo="mistralai/Mixtral-8x7B-Instruct-v0.1",
)  # fmt: skip
MIXTRAL_8X22B = ModelSpec(
    name="mixtral-8x22b", layers=56, experts=8, experts_per_token=2, total_params=141e9, active_params=39e9,
    hidden_size=6144, intermediate_size=16384, heads=48, kv_heads=8, head_dim=128, vocab_size=32_768,
    context_length=65_536, sliding_window=0, family="mixtral", hf_repo="mistralai/Mixtral-8x22B-Instruct-v0.1",
)  # fmt: skip

CATALOG: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        GPT_OSS_20B, GPT_OSS_120B, LLAMA_3_1_8B, LLAMA_3_1_70B, GEMMA_2_9B, GEMMA_2_27B, MIXTRAL_8X7B, MIXTRAL_8X22B,
    )
}  # fmt: skip
