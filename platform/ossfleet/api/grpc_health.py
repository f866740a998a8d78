"""``grpc.health.v1`` for Kubernetes gRPC probes and load balancers, on a port of its own.

Ray Serve's gRPC proxy routes every call by its ``application`` metadata,
which a Kubernetes gRPC probe or a load balancer's health check cannot send,
so the standard health service cannot live behind it. Each gateway replica
serves it itself (grpcio-health-checking's servicer) on
``endpoints.grpc_health_port``. The status of ``""`` (the server) and of
``ossfleet.v1.Ossfleet`` and ``ossfleet.admin.v1.Admin`` follows the
gateway's Redis: SERVING while a ping answers, NOT_SERVING from the first
ping that fails or times out, checked every ``every_s``; ``Watch`` streams the
changes. Several gateway replicas on one node share the port (gRPC sets
SO_REUSEPORT on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ossfleet.tasks import cancel_and_wait

log = logging.getLogger("ossfleet.health")

SERVICES = ("", "ossfleet.v1.Ossfleet", "ossfleet.admin.v1.Admin")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServer:
    def __init__(self, ping: Callable[[], Awaitable[bool]], port: int, host: str = "0.0.0.0", every_s: float = 1.0):
        self.ping = ping
        self.address = f"{host}:{port}"
        self.every_s = every_s
        self.servicer = health.aio.HealthServicer()
        self.serving: bool | None = None
        self._server: grpc.aio.Server | None = None
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Check Redis once, then serve; returns the bound port (the given one, or a free one for 0)."""
        await self.check()
        self._server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self._server)
        port = self._server.add_insecure_port(self.address)
        await self._server.start()
        self._loop_task = asyncio.get_running_loop().create_task(self._run())
        log.info("event=grpc_health_serving address=%s", self.address)
        return port

    async def check(self) -> bool:
        """Ping Redis and set every service's status from the answer."""
        try:
            ok = bool(await asyncio.wait_for(self.ping(), timeout=max(self.every_s, 1.0)))
        except Exception:
            ok = False
        if ok != self.serving:
            for s in SERVICES:
                await self.servicer.set(s, SERVING if ok else NOT_SERVING)
            if self.serving is not None:
                log.warning("event=grpc_health_changed serving=%s", ok)
            self.serving = ok
        return ok

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            with contextlib.suppress(Exception):
                await self.check()

    async def stop(self) -> None:
        if self._loop_task is not None:
            await cancel_and_wait(self._loop_task)
        if self._server is not None:
            await self.servicer.enter_graceful_shutdown()
            await self._server.stop(grace=1.0)
