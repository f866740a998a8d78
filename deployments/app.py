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

from ray.serve.config import AutoscalingConfig
from ray.serve.deployment import Application

from deployments.gateway import Gateway
from deployments.replica import ModelReplica
from ossfleet.config import ModelConfig, PlatformConfig, load_config, parse_config


@dataclass(frozen=True)
class AppSpec:
    name: str
    app: Application
    route_prefix: str | None


def replica_options(m: ModelConfig) -> dict[str, Any]:
    """Ray Serve options for one model's replicas: resources, placement, scaling."""
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
    else:
        opts["ray_actor_options"] = {"num_cpus": m.num_cpus, "num_gpus": m.num_gpus}
    r = m.replicas
    if r.min == r.max:
        opts["num_replicas"] = r.min
    else:
        opts["autoscaling_config"] = AutoscalingConfig(
            min_replicas=r.min, max_replicas=r.max, initial_replicas=r.initial
        )
    return opts


def gateway_deployment(cfg: PlatformConfig) -> Any:
    return Gateway.options(
        num_replicas=cfg.endpoints.gateway_replicas,
        max_ongoing_requests=cfg.endpoints.gateway_max_ongoing_requests,
    )


def build_applications(cfg: PlatformConfig, redis_url: str) -> list[AppSpec]:
    data = cfg.dump()
    apps = [
        AppSpec(f"model-{m.name}", ModelReplica.options(**replica_options(m)).bind(data, m.name, redis_url), None)
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
    return ModelReplica.options(**replica_options(m)).bind(cfg.dump(), m.name, _redis_url(cfg, args))
