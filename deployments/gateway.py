"""The Gateway ingress deployment: the OpenAI HTTP API and the gRPC API, holding no model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from ossfleet.api.grpc_admin import AdminGrpc
from ossfleet.api.grpc_health import HealthServer
from ossfleet.api.grpc_inference import GrpcApi
from ossfleet.api.grpc_server import ADMIN, OSSFLEET, GatewayGrpcServer, method_name
from ossfleet.api.http import create_app, current_batches, current_core, set_current
from ossfleet.batch.driver import adopt_active
from ossfleet.batch.service import batch_service
from ossfleet.config import parse_config
from ossfleet.control.gateway import GatewayCore

# The CPU share of one gateway replica.
GATEWAY_CPUS = 0.5

app = create_app(current_core, current_batches)


def _serve_grpc_method(impl: str, name: str, streaming: bool) -> Any:
    """What Serve's gRPC proxy calls (grpc_server: serve): the Gateway method named after an RPC, delegating
    to ``self.<impl>.<name>``. Serve passes the call context as ``grpc_context``."""
    if streaming:

        async def stream(self: Any, request: Any, grpc_context: Any) -> AsyncIterator[Any]:
            async for chunk in getattr(getattr(self, impl), name)(request, grpc_context):
                yield chunk

        return stream

    async def unary(self: Any, request: Any, grpc_context: Any) -> Any:
        return await getattr(getattr(self, impl), name)(request, grpc_context)

    return unary


class ServeGrpcMethods:
    """One method per RPC of both services, from their descriptors (the gateway's own server maps them the
    same way), for Serve's gRPC proxy to call by name."""


for _impl, _service in (("grpc", OSSFLEET), ("admin", ADMIN)):
    for _rpc in _service.methods:
        _method = _serve_grpc_method(_impl, method_name(_rpc.name), _rpc.server_streaming)
        setattr(ServeGrpcMethods, _rpc.name, _method)


@serve.deployment(name="Gateway", ray_actor_options={"num_cpus": GATEWAY_CPUS})
@serve.ingress(app)
class Gateway(ServeGrpcMethods):
    def __init__(self, config: dict[str, Any], redis_url: str) -> None:
        cfg = parse_config(config, config.get("source") or "<serve args>")
        self.core = GatewayCore(cfg, redis_url)
        self.batches = batch_service(self.core)
        self.grpc = GrpcApi(self.core, self.batches)
        self.admin = AdminGrpc(self.core, self.batches)
        set_current(self.core, self.batches)
        loop = asyncio.get_event_loop()
        self._adopter = loop.create_task(self._adopt_batches())
        # Both gRPC services on a port of the gateway's own (endpoints.grpc_server: gateway), not through Serve.
        self.grpc_server: GatewayGrpcServer | None = None
        if cfg.endpoints.grpc_server == "gateway":
            largest = max([cfg.batch.max_file_bytes, *(m.adapters.max_bytes for m in cfg.models)]) + (1 << 20)
            self.grpc_server = GatewayGrpcServer(self.grpc, self.admin, cfg.endpoints.grpc_port,
                                                 cfg.endpoints.http_host, max_message_bytes=largest)  # fmt: skip
            self._grpc_started = loop.create_task(self._start("grpc", self.grpc_server))
        # grpc.health.v1 on a port of its own (Serve's gRPC proxy needs metadata a probe cannot send).
        self.health: HealthServer | None = None
        if cfg.endpoints.grpc_health_port:
            self.health = HealthServer(self.core.ping, cfg.endpoints.grpc_health_port, cfg.endpoints.http_host)
            self._health_started = loop.create_task(self._start("grpc_health", self.health))

    @staticmethod
    async def _start(what: str, server: GatewayGrpcServer | HealthServer) -> bool:
        """Start a server; False when it cannot (a port taken). The health probe's failure leaves the
        replica serving; the gRPC API's makes it unhealthy (check_health), so Serve replaces it."""
        try:
            await server.start()
            return True
        except Exception as e:
            logging.getLogger("ossfleet.control.gateway").error("event=%s_failed address=%s error=%r", what,
                                                        server.address, f"{type(e).__name__}: {e}")  # fmt: skip
            return False

    async def __del__(self) -> None:
        """Serve stops this replica: finish the gRPC calls in flight (up to 5 s), then stop the servers."""
        # getattr: Serve calls this after an __init__ that failed, too.
        grpc_server, health = getattr(self, "grpc_server", None), getattr(self, "health", None)
        if grpc_server is not None:
            await grpc_server.stop(grace_s=5.0)
        if health is not None:
            await health.stop()

    async def _adopt_batches(self, every_s: float = 5.0) -> None:
        """Give every running batch job a driver, whichever gateway or driver died."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await adopt_active(self.core.cfg.dump(), self.core.redis_url, self.batches.store)
            except Exception as e:
                logging.getLogger("ossfleet.control.gateway").warning(
                    "event=batch_adopt_error error=%r", type(e).__name__
                )

    async def check_health(self) -> None:
        if not await self.core.ping():
            raise RuntimeError("gateway cannot reach Redis")
        if self.grpc_server is not None and self._grpc_started.done() and self._grpc_started.result() is False:
            raise RuntimeError(f"the gRPC API could not bind {self.grpc_server.address}")
