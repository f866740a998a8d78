"""Ray Serve's gRPC proxy calls the ingress deployment's method named after each RPC: every RPC of both
services must have one (a missing one answers INTERNAL "Tried to call a method ... that does not exist")."""

from __future__ import annotations

import inspect

import pytest

from deployments.gateway import Gateway
from ossfleet.v1 import admin_pb2, ossfleet_pb2


@pytest.mark.parametrize("module", [ossfleet_pb2, admin_pb2], ids=["ossfleet.v1", "ossfleet.admin.v1"])
def test_every_rpc_has_a_method_on_the_gateway_deployment(module):
    cls = Gateway.func_or_class
    for service in module.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            fn = getattr(cls, method.name, None)
            assert fn is not None, f"{service.full_name}/{method.name} has no Gateway.{method.name}"
            streaming = method.server_streaming
            assert inspect.isasyncgenfunction(fn) == streaming, f"{method.name}: streaming={streaming}"
