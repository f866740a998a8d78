"""The gateway's own gRPC server: both services on ``endpoints.grpc_port``, with no proxy in between.

With ``endpoints.grpc_server: gateway`` (the default) each gateway replica
serves ``ossfleet.v1.Ossfleet``, ``ossfleet.admin.v1.Admin`` and server
reflection itself, as it serves ``grpc.health.v1`` (grpc_health.py). A call
goes client -> gateway, where through Serve it went client -> Serve's gRPC
proxy (or HAProxy) -> gateway replica: bench/serving.py measures both.
Replicas on one node share the port (SO_REUSEPORT, set explicitly); the
kernel spreads connections over them. The server ignores the ``application``
metadata that Serve's proxy routes by, so clients written for Serve work
unchanged.

Each RPC calls the implementation's method of the same name in snake case
(``GetBatchResults``: ``get_batch_results``), found from the service
descriptor when the server is built; an RPC without one fails the start-up,
naming it. Unary methods return with the status they set (grpc_common.abort_with);
a streaming method raises its typed error, which ends the call here with that
error's status, message and trailers, as Serve's proxy does.
"""

from __future__ import annotations

import logging
import re
import types
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_reflection.v1alpha import reflection

from ossfleet.api.grpc_common import status_of
from ossfleet.errors import OssfleetError
from ossfleet.v1 import admin_pb2, admin_pb2_grpc, ossfleet_pb2, ossfleet_pb2_grpc

log = logging.getLogger("ossfleet.grpc")

OSSFLEET = ossfleet_pb2.DESCRIPTOR.services_by_name["Ossfleet"]
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["Admin"]


def method_name(rpc: str) -> str:
    """``GenerateStream`` -> ``generate_stream``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", rpc).lower()


def _streaming(fn: Callable[[Any, Any], AsyncIterator[Any]]) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in fn(request, context):
                yield item
        except OssfleetError as e:
            code, details, trailers = status_of(e)
            await context.abort(code, details, trailers)

    return call


def servicer(impl: object, service: ServiceDescriptor) -> Any:
    """An object with one grpc.aio handler per RPC of ``service``, each calling ``impl``'s method."""
    handlers = {}
    for rpc in service.methods:
        name = method_name(rpc.name)
        fn = getattr(impl, name, None)
        if fn is None:
            raise TypeError(f"{type(impl).__name__} has no {name}() for {service.full_name}/{rpc.name}")
        handlers[rpc.name] = _streaming(fn) if rpc.server_streaming else fn  # unary: returns with its status set
    return types.SimpleNamespace(**handlers)


class GatewayGrpcServer:
    """Serves the inference API (``api``) and the admin API (``admin``) on ``host:port``."""

    def __init__(self, api: object, admin: object, port: int, host: str = "0.0.0.0", max_message_bytes: int = 4 << 20):
        self.address = f"{host}:{port}"
        self._server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),  # an int: the string "0"/"1" is ignored by gRPC core
                ("grpc.max_receive_message_length", max_message_bytes),
            ]
        )
        ossfleet_pb2_grpc.add_OssfleetServicer_to_server(servicer(api, OSSFLEET), self._server)
        admin_pb2_grpc.add_AdminServicer_to_server(servicer(admin, ADMIN), self._server)
        names: Sequence[str] = (OSSFLEET.full_name, ADMIN.full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self._server)

    async def start(self) -> int:
        """Bind and serve; returns the bound port (the given one, or a free one for 0)."""
        port = self._server.add_insecure_port(self.address)
        await self._server.start()
        log.info("event=grpc_serving address=%s", self.address)
        return port

    async def stop(self, grace_s: float = 5.0) -> None:
        """Refuse new calls; let running ones finish for up to ``grace_s``, then cancel them."""
        await self._server.stop(grace=grace_s)
