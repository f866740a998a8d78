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
