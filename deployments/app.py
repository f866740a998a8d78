"""Ray Serve applications built from the ossfleet config.

One application per model (its replicas pull from Redis; no route) and one
for the Gateway (the HTTP ingress at ``/``). Separate applications deploy and
upgrade independently. :func:`serve_config` writes the same thing as a Ray
Serve config file for ``serve deploy`` and KubeRay's RayService; the builder
functions below are its import paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray.serve.config import AutoscalingConfig, AutoscalingPolicy
from ray.serve.deployment import Application

from autoscaling.serve_policy import POLICY_FUNCTION
from deployments.gateway import GATEWAY_CPUS, Gateway
from deployments.replica import ModelReplica
from ossfleet.config import ModelConfig, PlatformConfig, load_config, parse_config


@dataclass(frozen=True)
class AppSpec:
    name: str
    app: Application
    route_prefix: str | None


# Serve wraps a custom policy in its own up/down delays (defaults 30 s and 600 s);
# ossfleet's policy stabilizes by itself, so Serve's delays are off.
SERVE_DELAYS_OFF = {"upscale_delay_s": 0.0, "downscale_delay_s": 0.0, "downscale_to_zero_delay_s": 0.0}


def policy_kwargs(cfg: PlatformConfig, m: ModelConfig, redis_url: str | None) -> dict[str, Any]:
    """What ossfleet's autoscaling policy needs for one model (JSON, for the Serve controller)."""
    a = cfg.autoscaling
    return {
        "redis_url": redis_url or cfg.redis.url or "",
        "password_env": cfg.redis.password_env,
        "namespace": cfg.redis.namespace,
        "model": m.name,
        "bands": len(cfg.priorities.bands),
        "min_replicas": m.replicas.min,
        "max_replicas": m.replicas.max,
        "target_wait_s": a.target_wait_s,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
        "idle_to_zero_s": a.idle_to_zero_s,
        "cold_start_s": cfg.cold_start_s(m),
        "backlog_drain_s": a.backlog_drain_s,
        "warm_pool": a.warm_pool,
        "burst_hold_s": a.burst_hold_s,
        "batch_max_replicas": a.batch_max_replicas,
        "default_slots": m.max_batch_size,
        "adapters_per_replica": m.adapters.max_loaded if m.own_engine() else 0,
    }


def replica_options(m: ModelConfig, cfg: PlatformConfig | None = None, redis_url: str | None = None) -> dict[str, Any]:
    """Ray Serve options for one model's replicas: resources, placement, scaling.

    A model whose replica bounds differ scales by ossfleet's policy
    (autoscaling/serve_policy.py); one replica is one whole pipeline group.
    """
    opts: dict[str, Any] = {"name": f"{m.name}-replica"}
    stages = m.stages()
    if stages > 1:
        # One bundle per pipeline stage, each with its GPU; bundle 0 also holds the
        # replica actor itself (CPU only), so STRICT_SPREAD needs one node per
        # stage rather than an extra node for a CPU-only bundle.
        stage = {"CPU": m.stage_cpus, "GPU": m.num_gpus}
        opts["placement_group_bundles"] = [{**stage, "CPU": m.stage_cpus + m.num_cpus}] + [stage] * (stages - 1)
        opts["placement_group_strategy"] = m.placement_strategy
        opts["ray_actor_options"] = {"num_cpus": m.num_cpus}
    elif m.engine == "vllm":
        # vLLM's tensor and pipeline parallel workers run as processes of the replica on its node's GPUs.
        opts["ray_actor_options"] = {"num_cpus": m.num_cpus, "num_gpus": m.num_gpus * m.vllm.gpus()}
    else:
        opts["ray_actor_options"] = {"num_cpus": m.num_cpus, "num_gpus": m.num_gpus}
    r = m.replicas
    if r.min == r.max:
        opts["num_replicas"] = r.min
    else:
        policy = (
            AutoscalingPolicy(policy_function=POLICY_FUNCTION, policy_kwargs=policy_kwargs(cfg, m, redis_url))
            if cfg
            else None
        )
        opts["autoscaling_config"] = AutoscalingConfig(
            min_replicas=r.min,
            max_replicas=r.max,
            initial_replicas=r.initial,
            **({"policy": policy, **SERVE_DELAYS_OFF} if policy else {}),
        )
    return opts


def gateway_actor_options(cfg: PlatformConfig) -> dict[str, Any]:
    """The gateway's Ray resources: its CPU share, and the custom resources that pin it to the nodes meant
    for it (endpoints.gateway_resources)."""
    return {"num_cpus": GATEWAY_CPUS, **({"resources": dict(cfg.endpoints.gateway_resources)}
                                         if cfg.endpoints.gateway_resources else {})}  # fmt: skip


def gateway_deployment(cfg: PlatformConfig) -> Any:
    return Gateway.options(
        num_replicas=cfg.endpoints.gateway_replicas,
        max_ongoing_requests=cfg.endpoints.gateway_max_ongoing_requests,
        ray_actor_options=gateway_actor_options(cfg),
    )


def build_applications(cfg: PlatformConfig, redis_url: str) -> list[AppSpec]:
    data = cfg.dump()
    apps = [
        AppSpec(
            f"model-{m.name}",
            ModelReplica.options(**replica_options(m, cfg, redis_url)).bind(data, m.name, redis_url),
            None,
        )
        for m in cfg.models
    ]
    apps.append(AppSpec("gateway", gateway_deployment(cfg).bind(data, redis_url), "/"))
    return apps


def waiting_reasons(status: Any, apps: list[str]) -> dict[str, list[str]]:
    """Why each of ``apps`` is not running yet, from ``serve.status()``: Serve's own
    messages, such as a pipeline group's placement group waiting for resources
    ("Resources required for each replica: ..., total resources available: ...")."""
    out: dict[str, list[str]] = {}
    for name in apps:
        app = status.applications.get(name)
        if app is None:
            out[name] = ["not deployed yet"]
            continue
        if str(app.status) in ("RUNNING", "ApplicationStatus.RUNNING"):
            continue
        msgs = [d.message for d in app.deployments.values() if d.message]
        out[name] = msgs or [app.message or str(app.status)]
    return out


def deploy(
    specs: list[AppSpec],
    *,
    timeout_s: float | None = None,
    report: Callable[[str], None] = print,
    poll_s: float = 2.0,
) -> bool:
    """Deploy every application, then wait for them, reporting why any is still waiting.

    Returns True once all run; False at ``timeout_s`` (None: wait on) or when
    one fails to deploy. Each distinct reason is reported once, as it appears.
    """
    from ray import serve

    serve.run_many(
        [serve.RunTarget(target=s.app, name=s.name, route_prefix=s.route_prefix) for s in specs],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )
    names = [s.name for s in specs]
    seen: set[str] = set()
    start = time.monotonic()
    while True:
        status = serve.status()
        waiting = waiting_reasons(status, names)
        if not waiting:
            return True
        for app, reasons in waiting.items():
            for r in reasons:
                if r not in seen and r != "not deployed yet":
                    seen.add(r)
                    report(f"{app}: {r}")
            if app in status.applications and str(status.applications[app].status).endswith("DEPLOY_FAILED"):
                return False
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return False
        time.sleep(poll_s)


def _cfg(args: dict[str, Any]) -> PlatformConfig:
    if "config_path" in args:
        return load_config(args["config_path"])
    return parse_config(args["config"], "<serve args>")


def _redis_url(cfg: PlatformConfig, args: dict[str, Any]) -> str:
    url = args.get("redis_url") or cfg.redis.url
    if not url:
        raise ValueError("a Serve config needs redis.url (or args.redis_url): the embedded Redis is for `ossfleet up`")
    return str(url)


def gateway_app(args: dict[str, Any]) -> Application:
    """Import path for a Serve config: ``deployments.app:gateway_app``."""
    cfg = _cfg(args)
    return gateway_deployment(cfg).bind(cfg.dump(), _redis_url(cfg, args))


def model_app(args: dict[str, Any]) -> Application:
    """Import path for a Serve config: ``deployments.app:model_app`` with ``args.model``."""
    cfg = _cfg(args)
    m = cfg.model(args["model"])
    if m is None:
        raise ValueError(f"model {args['model']!r} is not in the config")
    url = _redis_url(cfg, args)
    return ModelReplica.options(**replica_options(m, cfg, url)).bind(cfg.dump(), m.name, url)
