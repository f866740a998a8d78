"""The switch back: `endpoints.grpc_server: serve` puts gRPC through Serve's gRPC ingress (HAProxy here, the
tests' ingress) to the Gateway deployment's methods named after the RPCs, generated from the service
descriptors. The same calls as on the gateway's own server, with the `application` metadata Serve routes by."""

from __future__ import annotations

import grpc
import pytest
from e2e_platform import free_port

from ossfleet.config import parse_config
from ossfleet.control.apikeys import new_api_key, register_admin_key, register_key
from ossfleet.redisdb import connect

pytestmark = pytest.mark.slow


def test_unary_streaming_errors_and_admin_calls_work_through_serves_grpc_ingress(tiny_checkpoint, redis_server):
    import ray
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.client import OssfleetClient
    from ossfleet.serveconfig import serve_start_options
    from ossfleet.v1 import admin_pb2 as apb
    from ossfleet.v1 import admin_pb2_grpc

    grpc_port = free_port()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        cfg = parse_config(
            {
                "redis": {"namespace": "grpc-serve"},
                "endpoints": {"http_port": free_port(), "grpc_port": grpc_port, "grpc_server": "serve",
                              "grpc_health_port": 0},
                "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(tiny_checkpoint),
                            "engine": "stub", "num_gpus": 1, "num_cpus": 0.25}],
                "tenants": [{"name": "acme"}],
            },
            "<grpc through serve>",
        )  # fmt: skip
        serve.start(**serve_start_options(cfg, local=True, host="127.0.0.1"))
        assert deploy(build_applications(cfg, redis_server.url), timeout_s=120)
        key, admin_key = new_api_key(), new_api_key()
        r = connect(redis_server.url)
        register_key(r, "grpc-serve", "acme", key)
        register_admin_key(r, "grpc-serve", "ops", admin_key)
        target = f"127.0.0.1:{grpc_port}"
        with OssfleetClient(target, key) as c:  # sends application: gateway
            reply = c.generate("gpt-oss-20b", [("user", "hi")], max_tokens=4, timeout=60)
            assert reply.usage.output_tokens == 4
            chunks = list(c.stream("gpt-oss-20b", [("user", "hi")], max_tokens=4, timeout=60))
            assert chunks[-1].finish_reason == "length" and chunks[-1].usage.output_tokens == 4
        with OssfleetClient(target, "osf-wrong") as c:
            with pytest.raises(grpc.RpcError) as e:
                list(c.stream("gpt-oss-20b", [("user", "x")], timeout=30))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and e.value.details()
        with grpc.insecure_channel(target) as ch:
            md = (("authorization", f"Bearer {admin_key}"), ("application", "gateway"))
            tenants = admin_pb2_grpc.AdminStub(ch).ListTenants(apb.ListTenantsRequest(), metadata=md, timeout=30)
        assert "acme" in [t.name for t in tenants.tenants]
    finally:
        serve.shutdown()
        ray.shutdown()
