"""The admin API (``/admin/v1/...``) and the web console (``/console``), on the gateway's HTTP app.

Reached with an admin key (``ossfleet admin-keys create``, or ``OSSFLEET_ADMIN_KEY`` at ``ossfleet up``):
a tenant's key gets 403 on every admin route, no key or an unknown one 401. Operators create, read,
update and delete tenants (``ossfleet.tenants``: every gateway sees a change within about a second),
issue, list (digest prefixes only) and revoke keys, and read spend and usage per tenant and model,
queue depth per model and band, replicas and their load, and batch jobs. Every change is audited
with the admin's name; bad input is a 4xx that changes nothing.

The console is one static page (``console/index.html``, no build step) over this API: the admin key
is typed into the page and kept in the browser's session storage, never in the page's HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from ossfleet.batch.service import BatchService
from ossfleet.config import TenantConfig
from ossfleet.errors import InvalidRequest, NotFound
from ossfleet.gateway import GatewayCore
from ossfleet.httpio import read_body
from ossfleet.pricing import NANO_PER_USD
from ossfleet.tenancy import (
    authenticate_admin,
    issue_key,
    period_id,
    revoke_all_keys,
    revoke_tenant_key,
    tenant_key_digests,
)
from ossfleet.tenants import KEY_FIELDS


def tenant_body(t: TenantConfig, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    body = t.model_dump(mode="json", exclude=KEY_FIELDS)
    if usage is not None:
        body["usage"] = {
            "period": usage["period"],
            "budget_usd": t.budget.limit_usd,
            "spent_usd": usage["spent_nusd"] / NANO_PER_USD,
            "reserved_usd": usage["reserved_nusd"] / NANO_PER_USD,
            "left_usd": usage["left_nusd"] / NANO_PER_USD,
            "models": usage["models"],
        }
    return body


def add_admin_routes(
    app: FastAPI, get_core: Callable[[], GatewayCore], get_batches: Callable[[], BatchService]
) -> None:
    async def admin(request: Request) -> tuple[GatewayCore, str]:
        core = get_core()
        actor = await authenticate_admin(core.r, core.cfg.redis.namespace, request.headers.get("authorization"))
        return core, actor

    async def usage(core: GatewayCore, t: TenantConfig, period: str | None = None) -> dict[str, Any]:
        p = period or period_id(t.budget.period)
        return {**await core.usage(t, p), "period": p}

    async def known(core: GatewayCore, name: str) -> TenantConfig:
        t, _ = await core.tenants.read(name)
        return t

    @app.get("/admin/v1/tenants")
    async def list_tenants(request: Request) -> JSONResponse:
        core, _ = await admin(request)
        tenants = await core.tenants.all()
        return JSONResponse({"data": [tenant_body(t, await usage(core, t)) for t in tenants]})

    @app.post("/admin/v1/tenants")
    async def create_tenant(request: Request) -> JSONResponse:
        core, actor = await admin(request)
        data = await read_body(request, core.cfg.limits.max_request_bytes)
        t = await core.tenants.create(data, actor)
        return JSONResponse(tenant_body(t, await usage(core, t)), status_code=201)

    @app.get("/admin/v1/tenants/{name}")
    async def get_tenant(name: str, request: Request) -> JSONResponse:
        core, _ = await admin(request)
        t = await known(core, name)
        return JSONResponse(tenant_body(t, await usage(core, t, request.query_params.get("period"))))

    @app.patch("/admin/v1/tenants/{name}")
    async def update_tenant(name: str, request: Request) -> JSONResponse:
        core, actor = await admin(request)
        data = await read_body(request, core.cfg.limits.max_request_bytes)
        t = await core.tenants.update(name, data, actor)
        return JSONResponse(tenant_body(t, await usage(core, t)))

    @app.delete("/admin/v1/tenants/{name}")
    async def delete_tenant(name: str, request: Request) -> JSONResponse:
        core, actor = await admin(request)
        await core.tenants.delete(name, actor)
        revoked = await revoke_all_keys(core.r, core.cfg.redis.namespace, name, actor)
        return JSONResponse({"name": name, "deleted": True, "keys_revoked": revoked})

    @app.post("/admin/v1/tenants/{name}/keys")
    async def create_key(name: str, request: Request) -> JSONResponse:
        core, actor = await admin(request)
        await known(core, name)
        key, digest = await issue_key(core.r, core.cfg.redis.namespace, name, actor)
        return JSONResponse({"tenant": name, "key": key, "digest_prefix": digest[:12]}, status_code=201)

    @app.get("/admin/v1/tenants/{name}/keys")
    async def list_keys(name: str, request: Request) -> JSONResponse:
        core, _ = await admin(request)
        await known(core, name)
        digests = await tenant_key_digests(core.r, core.cfg.redis.namespace, name)
        return JSONResponse({"data": [{"digest_prefix": d[:12]} for d in digests]})

    @app.delete("/admin/v1/tenants/{name}/keys/{prefix}")
    async def revoke_key(name: str, prefix: str, request: Request) -> JSONResponse:
        core, actor = await admin(request)
        await known(core, name)
        digest = await revoke_tenant_key(core.r, core.cfg.redis.namespace, name, prefix, actor)
        return JSONResponse({"tenant": name, "digest_prefix": digest[:12], "revoked": True})

    @app.get("/admin/v1/usage")
    async def usage_all(request: Request) -> JSONResponse:
        core, _ = await admin(request)
        period = request.query_params.get("period")
        if period is not None and not (len(period) in (7, 10) and period[:4].isdigit()):
            raise InvalidRequest("period is like 2026-12 (monthly) or 2026-12-01 (daily)", param="period")
        out = [tenant_body(t, await usage(core, t, period)) for t in await core.tenants.all()]
        return JSONResponse({"data": [{"name": b["name"], **b["usage"]} for b in out]})

    @app.get("/admin/v1/queues")
    async def queues(request: Request) -> JSONResponse:
        core, _ = await admin(request)
        bands = core.cfg.priorities.bands
        models = []
        for m in core.cfg.models:
            d = await core.queue.depth(m.name)
            replicas = await core.queue.replicas(m.name)
            models.append({
                "model": m.name,
                "waiting": dict(zip(bands, d.waiting, strict=True)),
                "oldest_wait_s": round(d.oldest_wait_s, 3),
                "running": d.leased,
                "replicas": [{"id": rid, **load} for rid, load in sorted(replicas.items())],
            })  # fmt: skip
        return JSONResponse({"bands": bands, "models": models})

    @app.get("/admin/v1/batches")
    async def batches(request: Request) -> JSONResponse:
        core, _ = await admin(request)
        store = get_batches().store
        out = []
        for t in await core.tenants.all():
            jobs, _ = await store.jobs(t.name, limit=50)
            out += [{**j.to_openai(), "tenant": t.name} for j in jobs]
        out.sort(key=lambda j: j.get("created_at", 0), reverse=True)
        return JSONResponse({"data": out})

    @app.get("/admin/v1/audit")
    async def audit_log(request: Request) -> JSONResponse:
        core, _ = await admin(request)
        raw = request.query_params.get("count", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise InvalidRequest("count must be a whole number from 1 to 1000", param="count")
        entries: Any = await core.r.xrevrange(core.queue.key("audit"), count=int(raw))
        data = [{"id": _s(i), **{_s(k): _s(v) for k, v in f.items()}} for i, f in entries]
        return JSONResponse({"data": data})

    @app.get("/console")
    async def console() -> HTMLResponse:
        page = resources.files("ossfleet") / "console" / "index.html"
        return HTMLResponse(page.read_text(), headers={"cache-control": "no-store"})

    @app.get("/admin/v1/{rest:path}", include_in_schema=False)
    async def unknown(rest: str, request: Request) -> JSONResponse:
        await admin(request)
        raise NotFound(f"no admin route /admin/v1/{rest}")


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
