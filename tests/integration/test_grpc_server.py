"""The gateway's own gRPC server (grpc_server.py) on a real grpc.aio server, called with the official stubs:
every RPC of both services finds its method; typed errors reach the client with their status, message and
trailers, unary and streaming alike; reflection lists the services; replicas on one node share the port."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ossfleet.api.grpc_admin import AdminGrpc
from ossfleet.api.grpc_common import abort_with
from ossfleet.api.grpc_inference import GrpcApi
from ossfleet.api.grpc_server import ADMIN, OSSFLEET, GatewayGrpcServer, method_name, servicer
from ossfleet.errors import InvalidRequest, RateLimited
from ossfleet.v1 import ossfleet_pb2 as pb
from ossfleet.v1 import ossfleet_pb2_grpc


def test_every_rpc_of_both_services_has_its_method():
    api, admin = object.__new__(GrpcApi), object.__new__(AdminGrpc)
    for impl, service in ((api, OSSFLEET), (admin, ADMIN)):
        handlers = servicer(impl, service)
        assert set(vars(handlers)) == {m.name for m in service.methods}
    assert method_name("GetBatchResults") == "get_batch_results" and method_name("Cancel") == "cancel"


def test_an_rpc_without_a_method_fails_the_build_naming_it():
    class Partial:
        async def generate(self, req: Any, ctx: Any) -> Any:
            return None

    with pytest.raises(TypeError, match=r"no generate_stream\(\) for ossfleet.v1.Ossfleet/GenerateStream"):
        servicer(Partial(), OSSFLEET)


class Api(GrpcApi):
    """GrpcApi with three methods answered here (no gateway core); the rest are never called."""

    def __init__(self) -> None:
        pass

    async def list_models(self, req: pb.ListModelsRequest, ctx: Any) -> pb.ListModelsResponse:
        md = dict(ctx.invocation_metadata())
        if md.get("authorization") != "Bearer good":
            abort_with(ctx, RateLimited("slow down", retry_after_s=2.2))
            return pb.ListModelsResponse()
        return pb.ListModelsResponse(models=[pb.Model(id="m"), pb.Model(id=md.get("application", "-"))])

    async def generate_stream(self, req: pb.GenerateRequest, ctx: Any) -> Any:
        yield pb.GenerateChunk(request_id="r1", content="first")
        err = InvalidRequest("max_tokens must be positive", param="max_tokens")
        abort_with(ctx, err)
        raise err


async def test_statuses_messages_and_trailers_reach_the_client_and_reflection_lists_the_services():
    server = GatewayGrpcServer(Api(), object.__new__(AdminGrpc), 0, "127.0.0.1")
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = ossfleet_pb2_grpc.OssfleetStub(ch)
            # The application metadata Serve's proxy routes by is accepted and ignored.
            ok = await stub.ListModels(pb.ListModelsRequest(), metadata=[("authorization", "Bearer good"),
                                                                         ("application", "gateway")])  # fmt: skip
            assert [m.id for m in ok.models] == ["m", "gateway"]
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.ListModels(pb.ListModelsRequest(), metadata=[("authorization", "Bearer bad")])
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and e.value.details() == "slow down"
            assert ("retry-after", "3") in tuple(e.value.trailing_metadata() or ())
            call = stub.GenerateStream(pb.GenerateRequest(model="m"))
            first = await call.read()
            assert first.content == "first"
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call.read()
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert e.value.details() == "max_tokens must be positive"
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            names: list[str] = []
            async for r in refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
                names += [s.name for s in r.list_services_response.service]
            assert {"ossfleet.v1.Ossfleet", "ossfleet.admin.v1.Admin"} <= set(names)
    finally:
        await server.stop(grace_s=0)


async def test_two_replicas_on_one_node_share_the_port():
    first = GatewayGrpcServer(Api(), object.__new__(AdminGrpc), 0, "127.0.0.1")
    port = await first.start()
    second = GatewayGrpcServer(Api(), object.__new__(AdminGrpc), port, "127.0.0.1")
    try:
        assert await second.start() == port
        await first.stop(grace_s=0)  # one replica goes: the other still answers on the port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            ok = await ossfleet_pb2_grpc.OssfleetStub(ch).ListModels(
                pb.ListModelsRequest(), metadata=[("authorization", "Bearer good")]
            )
        assert ok.models[0].id == "m"
    finally:
        await second.stop(grace_s=0)
