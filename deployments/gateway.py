"""The Gateway ingress deployment: the OpenAI HTTP API, holding no model."""

from __future__ import annotations

from typing import Any

from ray import serve

from ossfleet.config import parse_config
from ossfleet.gateway import GatewayCore
from ossfleet.openai_api import create_app, current_core, set_current_core

app = create_app(current_core)


@serve.deployment(name="Gateway", ray_actor_options={"num_cpus": 0.5})
@serve.ingress(app)
class Gateway:
    def __init__(self, config: dict[str, Any], redis_url: str) -> None:
        cfg = parse_config(config, config.get("source") or "<serve args>")
        self.core = GatewayCore(cfg, redis_url)
        set_current_core(self.core)

    async def check_health(self) -> None:
        if not await self.core.ping():
            raise RuntimeError("gateway cannot reach Redis")
