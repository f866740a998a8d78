"""The ``models`` section: one served model each, its catalog spec, checkpoint, engine, prices, replicas and
(pipeline) plan."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ossfleet.catalog import CATALOG, PlanError, ReplicaPlan
from ossfleet.config.base import _Section


class PriceConfig(_Section):
    """US dollars per 1,000 tokens."""

    input_per_1k: Annotated[float, Field(ge=0)] = 0.0
    output_per_1k: Annotated[float, Field(ge=0)] = 0.0


class AdaptersConfig(_Section):
    """Tenants' LoRA adapters on this model (engine: batched; see ossfleet/lora_format.py for what is served)."""

    # Adapters each replica holds at once, least recently used evicted first; 0: no adapters on this model.
    max_loaded: Annotated[int, Field(ge=0, le=256)] = 4
    max_rank: Annotated[int, Field(ge=1, le=1024)] = 64
    max_bytes: Annotated[int, Field(ge=1024)] = 512 * 1024 * 1024
    # Added to the model's price for every request that uses an adapter.
    surcharge: PriceConfig = PriceConfig()


class ReplicasConfig(_Section):
    min: Annotated[int, Field(ge=0)] = 1
    max: Annotated[int, Field(ge=1)] = 1
    initial: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ReplicasConfig:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(f"initial ({self.initial}) must lie in [min, max] = [{self.min}, {self.max}]")
        return self


class VllmEngineConfig(_Section):
    """engine: vllm only. How vLLM lays one replica out inside its node, and its cache.

    Tensor and pipeline parallelism here are vLLM's own, across the GPUs of one node (one replica
    holds ``tensor_parallel_size x pipeline_parallel_size`` GPUs); a pipeline across nodes is
    ossfleet's batched engine (``pipeline_stages``).
    """

    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    pipeline_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    # GPUs: the fraction of each GPU's memory vLLM may take (weights, activations, KV cache).
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    # CPUs: GiB of memory for the KV cache (vLLM's VLLM_CPU_KVCACHE_SPACE); None: vLLM's default.
    kv_cache_gib: Annotated[int, Field(ge=1, le=4096)] | None = None  # whole GiB: vLLM reads an int
    # Prefix caching, salted per tenant: a tenant reuses only its own cached prompts.
    prefix_caching: bool = True
    # Sequences beyond max_batch_size that vLLM runs for tenants with nothing running on the replica, so
    # one tenant's flood of long requests never makes another's first request wait for a slot to free.
    # None: max(1, max_batch_size // 8); 0: none.
    headroom_slots: Annotated[int, Field(ge=0, le=256)] | None = None
    # CUDA graphs and torch.compile off (faster start, slower steps); always off on CPUs here.
    enforce_eager: bool = False

    def gpus(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


class ModelConfig(_Section):
    """One served model: which catalog spec it is, where its checkpoint lies, how it runs."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    spec: str
    path: str
    # transformers: the library's continuous batching (one process, greedy);
    # batched: ossfleet's micro-batched engine (any stage count, full sampling);
    # stub: no model, answers at once; mii: DeepSpeed-MII where it can run;
    # vllm: vLLM's async engine in the replica (one node; see ``vllm``).
    # A model with more than one pipeline stage always runs the batched engine.
    engine: Literal["transformers", "batched", "stub", "mii", "vllm"] = "batched"
    device: str = "cpu"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # How the engine keeps the experts in memory. bf16: dequantized to ``dtype`` as they load (what
    # transformers does without its Triton kernels; 3.8x the packed bytes). mxfp4: packed as released
    # (4.25 bits a weight), only the experts a step routes to dequantized, per step (needs a checkpoint
    # in the released MXFP4 format).
    weights: Literal["bf16", "mxfp4"] = "bf16"
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    max_context: Annotated[int, Field(ge=16)] = 4096
    # GPUs one pipeline stage uses, and how many stages one replica has.
    # "auto" derives the stage count from the catalog and gpu_memory_gib.
    pipeline_stages: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = 1
    gpu_memory_gib: Annotated[float, Field(gt=0)] = 80.0
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    # Engine steps in flight (each over its own group of requests); "auto": one per stage, so every
    # stage works on every step.
    micro_batches: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    # engine: batched only. KV cache size in tokens (each stage holds its layers' share); None:
    # max_batch_size x max_context, room for every slot's whole context. Tokens one engine step
    # computes over all its requests (decodes first, then prefill chunks of what is left).
    kv_cache_tokens: Annotated[int, Field(ge=16)] | None = None
    max_step_tokens: Annotated[int, Field(ge=16, le=65536)] = 512
    # engine: stub only: seconds per generated token, to stand in for a GPU's pace in load tests.
    stub_token_delay_s: Annotated[float, Field(ge=0, le=10)] = 0.0
    stage_cpus: Annotated[float, Field(ge=0)] = 1.0
    num_gpus: Annotated[float, Field(ge=0)] = 1.0
    num_cpus: Annotated[float, Field(ge=0)] = 1.0
    torch_threads: Annotated[int, Field(ge=1)] | None = None
    replicas: ReplicasConfig = ReplicasConfig()
    price: PriceConfig = PriceConfig()
    adapters: AdaptersConfig = AdaptersConfig()
    vllm: VllmEngineConfig = VllmEngineConfig()

    @field_validator("spec")
    @classmethod
    def _known_spec(cls, v: str) -> str:
        if v not in CATALOG:
            raise ValueError(f"unknown model spec {v!r}; the catalog has {sorted(CATALOG)}")
        return v

    def own_engine(self) -> bool:
        """Whether ossfleet's batched engine runs this model (it alone enforces structured output and
        returns log-probabilities): as configured, and for any pipeline of more than one stage."""
        return self.engine == "batched" or (self.engine == "transformers" and self.stages() > 1)

    def enforces_grammars(self) -> bool:
        """Whether the model's engine enforces structured output and returns log-probabilities:
        ossfleet's batched engine and vLLM do."""
        return self.own_engine() or self.engine == "vllm"

    def micro_batch_count(self) -> int:
        return self.stages() if self.micro_batches == "auto" else min(self.micro_batches, self.max_batch_size)

    def stage_ranges(self, layers: int) -> list[tuple[int, int]]:
        """The layer range of each pipeline stage for a checkpoint of ``layers`` layers
        (the catalog's for a real checkpoint; fewer for a tiny stand-in)."""
        from ossfleet.catalog import split_layers

        out, start = [], 0
        for n in split_layers(layers, self.stages()):
            out.append((start, start + n))
            start += n
        return out

    def stages(self) -> int:
        """Pipeline stages per replica: as configured, or planned by the catalog."""
        if self.pipeline_stages == "auto":
            return self.plan().stages
        return self.pipeline_stages

    def torch_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if self.device.startswith("cuda") else "float32"

    def plan(self) -> ReplicaPlan:
        """The catalog's plan for this model on GPUs of ``gpu_memory_gib``: its weight format, its dtype,
        its ``max_context``, and the configured stage count (or the fewest that fit, for ``auto``)."""
        spec = CATALOG[self.spec]
        dtype_bytes = 4 if self.torch_dtype() == "float32" else 2
        if self.pipeline_stages == "auto":
            return spec.plan(
                self.gpu_memory_gib, weights=self.weights, max_context=self.max_context, dtype_bytes=dtype_bytes
            )
        return spec.plan_stages(
            self.gpu_memory_gib, self.pipeline_stages, weights=self.weights, max_context=self.max_context,
            dtype_bytes=dtype_bytes,
        )  # fmt: skip

    @model_validator(mode="after")
    def _weights_as_released(self) -> ModelConfig:
        spec = CATALOG[self.spec]
        try:
            spec.check_weights(self.weights)
        except PlanError as e:
            raise ValueError(str(e)) from None
        return self

    @model_validator(mode="after")
    def _vllm_in_one_node(self) -> ModelConfig:
        if self.engine == "vllm" and self.pipeline_stages != 1:
            raise ValueError(
                "engine 'vllm' runs a replica inside one node: set vllm.pipeline_parallel_size (and "
                "tensor_parallel_size) for GPUs of one node, or engine 'batched' for pipeline_stages across nodes"
            )
        return self

    @model_validator(mode="after")
    def _fits_its_gpus(self) -> ModelConfig:
        # A model on GPUs must fit them as configured; on CPU there is no GPU memory to plan.
        if self.device.startswith("cuda") or self.pipeline_stages == "auto":
            try:
                self.plan()
            except PlanError as e:
                raise ValueError(str(e)) from None
        return self
