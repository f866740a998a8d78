"""Renders the Ray Serve config file (for ``serve deploy`` and KubeRay's RayService)."""

from __future__ import annotations

from typing import Any

import yaml

from ossfleet.config import PlatformConfig
from ossfleet.grpc_api import SERVICER_FUNCTIONS


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
        "grpc_options": {
            "port": cfg.endpoints.grpc_port,
            "grpc_servicer_functions": SERVICER_FUNCTIONS,
            "enable_reflection": True,
        },
        "applications": apps,
    }


def render_serve_config(cfg: PlatformConfig, config_path: str) -> str:
    return yaml.safe_dump(serve_config(cfg, config_path), sort_keys=False)
