"""The rendered Serve config, judged by Ray's own schema (what `serve deploy` and a RayService read)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from ossfleet.config import load_config
from ossfleet.serveconfig import render_serve_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_serve_config_of_every_shipped_config_passes_serve_deploy_schema(path):
    cfg = load_config(path)
    rendered = yaml.safe_load(render_serve_config(cfg, "/etc/ossfleet/config.yaml"))
    schema = ServeDeploySchema.model_validate(rendered)
    routes = {a.name: a.route_prefix for a in schema.applications}
    assert routes.pop("gateway") == "/"
    assert set(routes) == {f"model-{m.name}" for m in cfg.models}
    assert all(r is None for r in routes.values()), "model applications have no HTTP route"


def test_serve_config_policy_reads_redis_from_the_clusters_config_file(tmp_path):
    from autoscaling.serve_policy import OssfleetServePolicy

    cfg = load_config(ROOT / "config" / "production.yaml")
    rendered = yaml.safe_load(render_serve_config(cfg, str(tmp_path / "config.yaml")))
    kwargs = rendered["applications"][0]["deployments"][0]["autoscaling_config"]["policy"]["policy_kwargs"]
    # The rendered file never carries the production file's placeholder URL...
    assert kwargs["redis_url"] == "" and kwargs["config_path"] == str(tmp_path / "config.yaml")
    # ...the policy reads the one the cluster's config file holds (what Terraform writes there).
    on_cluster = yaml.safe_load((ROOT / "config" / "production.yaml").read_text())
    on_cluster["redis"]["url"] = "rediss://queue.internal:6379/0"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(on_cluster))
    assert OssfleetServePolicy(**kwargs).redis_url == "rediss://queue.internal:6379/0"


def test_deploy_gateway_resources_pin_the_gateway_and_only_custom_names_are_accepted(tmp_path):
    from ossfleet.config import ConfigError, parse_config

    base = yaml.safe_load((Path(__file__).parents[2] / "config" / "local.yaml").read_text())
    plain = yaml.safe_load(render_serve_config(parse_config(base, "<t>"), "/c.yaml"))
    (gw,) = [a for a in plain["applications"] if a["name"] == "gateway"]
    assert "ray_actor_options" not in gw["deployments"][0]  # the decorator's CPU share, anywhere
    pinned = {**base, "endpoints": {**base.get("endpoints", {}), "gateway_resources": {"ossfleet_gateway": 1}}}
    rendered = yaml.safe_load(render_serve_config(parse_config(pinned, "<t>"), "/c.yaml"))
    ServeDeploySchema.model_validate(rendered)
    (gw,) = [a for a in rendered["applications"] if a["name"] == "gateway"]
    assert gw["deployments"][0]["ray_actor_options"] == {"num_cpus": 0.5, "resources": {"ossfleet_gateway": 1}}
    for bad in ({"GPU": 1}, {"a b": 1}, {"ossfleet_gateway": 0}, {"x": float("inf")}):
        with pytest.raises(ConfigError, match="gateway_resources"):
            parse_config({**base, "endpoints": {"gateway_resources": bad}}, "<t>")


@pytest.mark.parametrize(("grpc_server", "serve_grpc"), [("gateway", False), ("serve", True)])
@pytest.mark.parametrize("ingress", ["haproxy", "proxy"])
def test_ingress_and_grpc_server_choose_what_serve_starts(ingress, grpc_server, serve_grpc):
    """The ingress is an environment variable Ray reads at start; Serve's gRPC ingress is started (with both
    services) only where Serve answers gRPC, so nothing of Serve's binds the gateways' grpc_port otherwise.
    Both renderings pass Ray's own schemas (ServeDeploySchema, gRPCOptions)."""
    from ray.serve._private.utils import is_grpc_enabled

    from ossfleet.api.grpc_inference import SERVICER_FUNCTIONS
    from ossfleet.config import parse_config
    from ossfleet.serveconfig import HA_PROXY_ENV, THROUGHPUT_ENV, ray_env, serve_start_options

    base = yaml.safe_load((ROOT / "config" / "local.yaml").read_text())
    base["endpoints"] = {**base.get("endpoints", {}), "ingress": ingress, "grpc_server": grpc_server}
    cfg = parse_config(base, "<t>")
    env = ray_env(cfg)
    on = "1" if ingress == "haproxy" else "0"
    assert (env[HA_PROXY_ENV], env[THROUGHPUT_ENV]) == (on, on)
    if ingress == "haproxy":
        assert (env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]) == ("8404", "9101")
    opts = serve_start_options(cfg, local=True)
    assert is_grpc_enabled(opts["grpc_options"]) is serve_grpc
    assert opts["grpc_options"].port == cfg.endpoints.grpc_port
    if serve_grpc:
        assert opts["grpc_options"].grpc_servicer_functions == SERVICER_FUNCTIONS
    assert (
        opts["proxy_location"] == "HeadOnly" and serve_start_options(cfg, local=False)["proxy_location"] == "EveryNode"
    )
    rendered = yaml.safe_load(render_serve_config(cfg, "/c.yaml"))
    ServeDeploySchema.model_validate(rendered)
    assert ("grpc_options" in rendered) is serve_grpc
