"""The gRPC admin API (``ossfleet.admin.v1.Admin``): the admin API's operations (``AdminService``), for an
admin's key. Each RPC passes through the same interceptor as the inference API (``grpc_common.rpc``)."""

from __future__ import annotations

import json
from typing import Any

from ossfleet import jsonlimits
from ossfleet.api.admin import AdminService
from ossfleet.api.grpc_common import Call, rpc
from ossfleet.batch.service import BatchService
from ossfleet.control.gateway import GatewayCore
from ossfleet.v1 import admin_pb2 as apb


def _usage_pb(u: dict[str, Any]) -> apb.Usage:
    return apb.Usage(
        period=u["period"], budget_usd=u["budget_usd"], spent_usd=u["spent_usd"], reserved_usd=u["reserved_usd"],
        left_usd=u["left_usd"], models_json=json.dumps(u["models"]),
    )  # fmt: skip


def _tenant_pb(body: dict[str, Any]) -> apb.Tenant:
    config = {k: v for k, v in body.items() if k != "usage"}
    return apb.Tenant(name=body["name"], config_json=json.dumps(config), usage=_usage_pb(body["usage"]))


def _fields(raw: str) -> Any:
    return jsonlimits.loads(raw, "fields_json", "fields_json") if raw else {}


class AdminGrpc:
    """``ossfleet.admin.v1.Admin``: the admin API's operations (``AdminService``) over gRPC."""

    def __init__(self, core: GatewayCore, batches: BatchService) -> None:
        self.svc = AdminService(core, batches)

    async def authenticate(self, authorization: str | None) -> str:
        """The admin's name, for an admin key (a tenant's key is PERMISSION_DENIED)."""
        return await self.svc.authenticate(authorization)

    @rpc(apb.TenantList)
    async def list_tenants(self, req: apb.ListTenantsRequest, call: Call) -> apb.TenantList:
        return apb.TenantList(tenants=[_tenant_pb(t) for t in await self.svc.list_tenants()])

    @rpc(apb.Tenant)
    async def get_tenant(self, req: apb.TenantRequest, call: Call) -> apb.Tenant:
        return _tenant_pb(await self.svc.get_tenant(req.name, req.period or None))

    @rpc(apb.Tenant)
    async def create_tenant(self, req: apb.TenantChange, call: Call) -> apb.Tenant:
        fields = _fields(req.fields_json)
        if isinstance(fields, dict) and req.name:
            fields = {**fields, "name": req.name}
        return _tenant_pb(await self.svc.create_tenant(fields, call.who))

    @rpc(apb.Tenant)
    async def update_tenant(self, req: apb.TenantChange, call: Call) -> apb.Tenant:
        return _tenant_pb(await self.svc.update_tenant(req.name, _fields(req.fields_json), call.who))

    @rpc(apb.DeleteTenantResponse)
    async def delete_tenant(self, req: apb.TenantRequest, call: Call) -> apb.DeleteTenantResponse:
        out = await self.svc.delete_tenant(req.name, call.who)
        return apb.DeleteTenantResponse(name=out["name"], keys_revoked=out["keys_revoked"], removed=out["removed"])

    @rpc(apb.NewKey)
    async def create_key(self, req: apb.TenantRequest, call: Call) -> apb.NewKey:
        return apb.NewKey(**await self.svc.create_key(req.name, call.who))

    @rpc(apb.KeyList)
    async def list_keys(self, req: apb.TenantRequest, call: Call) -> apb.KeyList:
        keys = await self.svc.list_keys(req.name)
        return apb.KeyList(keys=[apb.KeyRef(tenant=req.name, digest_prefix=k["digest_prefix"]) for k in keys])

    @rpc(apb.KeyRef)
    async def revoke_key(self, req: apb.RevokeKeyRequest, call: Call) -> apb.KeyRef:
        out = await self.svc.revoke_key(req.name, req.digest_prefix, call.who)
        return apb.KeyRef(tenant=out["tenant"], digest_prefix=out["digest_prefix"])

    @rpc(apb.Spend)
    async def get_spend(self, req: apb.SpendRequest, call: Call) -> apb.Spend:
        rows = await self.svc.usage(req.period or None)
        return apb.Spend(tenants=[apb.TenantSpend(name=r["name"], usage=_usage_pb(r)) for r in rows])

    @rpc(apb.Queues)
    async def get_queues(self, req: apb.QueuesRequest, call: Call) -> apb.Queues:
        q = await self.svc.queues()
        models = [
            apb.ModelQueue(
                model=m["model"], waiting=m["waiting"], oldest_wait_s=m["oldest_wait_s"], running=m["running"],
                replicas=[apb.Replica(id=r["id"], load_json=json.dumps({k: v for k, v in r.items() if k != "id"}))
                          for r in m["replicas"]],
            )
            for m in q["models"]
        ]  # fmt: skip
        return apb.Queues(bands=q["bands"], models=models)

    @rpc(apb.Audit)
    async def read_audit(self, req: apb.AuditRequest, call: Call) -> apb.Audit:
        rows = await self.svc.audit(req.count or 50)
        return apb.Audit(entries=[apb.AuditEntry(id=r.pop("id"), fields=r) for r in rows])

    @rpc(apb.Comparison)
    async def get_comparison(self, req: apb.ComparisonRequest, call: Call) -> apb.Comparison:
        c = await self.svc.comparison(req.name, req.days or 7, req.pairs)
        return apb.Comparison(
            tenant=c["tenant"], days=c["days"], bounds_s=c["bounds_s"], models=[_model_pb(m) for m in c["models"]],
            pairs=[apb.Pair(request_id=p["request_id"], at=p["at"], primary=_answer_pb(p["primary"]),
                            shadow=_answer_pb(p["shadow"])) for p in c["pairs"]],
            shadows_json=json.dumps(c["shadows"]), aliases_json=json.dumps(c["aliases"]),
        )  # fmt: skip


def _percentiles(p: dict[str, Any]) -> apb.Percentiles | None:
    if not p["count"]:
        return None
    return apb.Percentiles(p50=p["p50"], p90=p["p90"], p99=p["p99"], count=p["count"])


def _model_pb(m: dict[str, Any]) -> apb.ModelComparison:
    return apb.ModelComparison(
        model=m["model"], role=m["role"], requests=m["requests"], errors=m["errors"], refused=m["refused"],
        finish_reasons=m["finish_reasons"], output_tokens=m["output_tokens"], cost_usd=m["cost_usd"],
        cost_per_1k_requests_usd=m["cost_per_1k_requests_usd"] or 0.0, ttft_s=_percentiles(m["ttft_s"]),
        itl_s=_percentiles(m["itl_s"]), queue_s=_percentiles(m["queue_s"]), ttft_hist=m["histograms"]["ttft"],
        itl_hist=m["histograms"]["itl"], queue_hist=m["histograms"]["queue"],
    )  # fmt: skip


def _answer_pb(a: dict[str, Any]) -> apb.Answer:
    return apb.Answer(
        model=a["model"], request_id=a["request_id"], content=a["content"], finish_reason=a["finish_reason"] or "",
        output_tokens=a["output_tokens"], cost_usd=a["cost_usd"], error=a["error"] or "",
    )  # fmt: skip
