"""grpc.health.v1 as Kubernetes and load balancers call it (the official health stub), following a real
Redis: SERVING while it answers, NOT_SERVING once it is gone (seen through Watch, as it happens)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ossfleet.api.grpc_health import SERVICES, HealthServer
from ossfleet.redisdb import EmbeddedRedis, connect_async


async def test_health_follows_redis_for_every_service_and_refuses_unknown_ones(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    client = connect_async(server.url)

    async def ping() -> bool:
        return bool(await client.ping())

    health = HealthServer(ping, 0, "127.0.0.1", every_s=0.2)
    port = await health.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in SERVICES:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
            try:
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"))
                raise AssertionError("an unknown service must be NOT_FOUND")
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="ossfleet.v1.Ossfleet"))
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            server.stop()  # Redis goes away: the next ping fails
            changed = await watch.read()
            assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
    finally:
        await health.stop()
        await client.aclose()
