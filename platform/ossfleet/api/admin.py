"""The admin API (``/admin/v1/...``) and the web console (``/console``), on the gateway's HTTP app.

Reached with an admin key (``ossfleet admin-keys create``, or ``OSSFLEET_ADMIN_KEY`` at ``ossfleet up``):
a tenant's key gets 403 on every admin route, no key or an unknown one 401. Operators create, read,
update and delete tenants (``ossfleet.control.tenants``: every gateway sees a change within about a second),
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

from ossfleet.api.httpio import read_body
from ossfleet.batch.service import BatchService
from ossfleet.config import TenantConfig
from ossfleet.control.apikeys import (
    authenticate_admin,
    issue_key,
    revoke_all_keys,
    revoke_tenant_key,
    tenant_key_digests,
)
from ossfleet.control.audit import audit_async
from ossfleet.control.budget import period_id
from ossfleet.control.gateway import GatewayCore
from ossfleet.control.pricing import NANO_PER_USD
from ossfleet.control.tenant_purge import outstanding, purge_tenant
from ossfleet.control.tenants import KEY_FIELDS
from ossfleet.errors import InvalidRequest, NotFound, StillInUse


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


class AdminService:
    """What the admin API does, whichever protocol asks: plain dicts in, plain dicts out."""

    def __init__(self, core: GatewayCore, batches: BatchService) -> None:
        self.core = core
        self.batches = batches
        self.ns = core.cfg.redis.namespace

    async def authenticate(self, authorization: str | None) -> str:
        """The admin's name (the actor of its changes); a tenant key is 403, anything else 401."""
        return await authenticate_admin(self.core.r, self.ns, authorization)

    async def _usage(self, t: TenantConfig, period: str | None = None) -> dict[str, Any]:
        if period is not None and not (len(period) in (7, 10) and period[:4].isdigit() and period[4] == "-"):
            raise InvalidRequest("period is like 2026-12 (monthly) or 2026-12-01 (daily)", param="period")
        p = period or period_id(t.budget.period)
        return {**await self.core.usage(t, p), "period": p}

    async def _known(self, name: str) -> TenantConfig:
        return (await self.core.tenants.read(name))[0]

    async def list_tenants(self) -> list[dict[str, Any]]:
        return [tenant_body(t, await self._usage(t)) for t in await self.core.tenants.all()]

    async def get_tenant(self, name: str, period: str | None = None) -> dict[str, Any]:
        t = await self._known(name)
        return tenant_body(t, await self._usage(t, period))

    async def create_tenant(self, data: Any, actor: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise InvalidRequest("a tenant is a JSON object")
        t = await self.core.tenants.create(data, actor)
        return tenant_body(t, await self._usage(t))

    async def update_tenant(self, name: str, data: Any, actor: str) -> dict[str, Any]:
        if not isinstance(data, dict) or not data:
            raise InvalidRequest("give the fields to change as a non-empty JSON object")
        t = await self.core.tenants.update(name, data, actor)
        return tenant_body(t, await self._usage(t))

    async def delete_tenant(self, name: str, actor: str) -> dict[str, Any]:
        """Delete a tenant with nothing outstanding, its keys, and everything it left (tenant_purge)."""
        await self.core.tenants.read(name)  # NotFound first
        reasons = await outstanding(self.core.r, self.core.queue.keys, name)
        if reasons:
            raise StillInUse(
                f"tenant {name!r} still has work: {'; '.join(reasons)}. Revoke its keys so that nothing new "
                "arrives, cancel its batch jobs, and delete it once they have ended",
                param="name",
            )
        await self.core.tenants.delete(name, actor)
        revoked = await revoke_all_keys(self.core.r, self.ns, name, actor)
        report = await purge_tenant(self.core.r, self.core.queue.keys, name, self.core.adapters.storage)
        removed = report.as_dict()
        await audit_async(self.core.r, self.ns, "tenant_purged", tenant=name, actor=actor,
                          **{k: str(v) for k, v in removed.items()})  # fmt: skip
        return {"name": name, "deleted": True, "keys_revoked": revoked, "removed": removed}

    async def create_key(self, name: str, actor: str) -> dict[str, Any]:
        await self._known(name)
        key, digest = await issue_key(self.core.r, self.ns, name, actor)
        return {"tenant": name, "key": key, "digest_prefix": digest[:12]}

    async def list_keys(self, name: str) -> list[dict[str, Any]]:
        await self._known(name)
        return [{"digest_prefix": d[:12]} for d in await tenant_key_digests(self.core.r, self.ns, name)]

    async def revoke_key(self, name: str, prefix: str, actor: str) -> dict[str, Any]:
        await self._known(name)
        digest = await revoke_tenant_key(self.core.r, self.ns, name, prefix, actor)
        return {"tenant": name, "digest_prefix": digest[:12], "revoked": True}

    async def comparison(self, name: str, days: int = 7, pairs: int = 20) -> dict[str, Any]:
        """The tenant's models compared on its own traffic (``control/comparison``): per model and role
        (served, shadow) requests, errors, refusals, finish reasons, tokens, cost per 1,000 requests and
        latency percentiles and histograms over the last ``days`` UTC days; its latest ``pairs`` side-by-side
        answers and shadows."""
        t = await self._known(name)
        out = await self.core.comparisons.read(name, days, pairs)
        out["shadows"] = {m: s.model_dump() for m, s in t.shadows.items()}
        out["aliases"] = {a: x.model_dump() for a, x in t.aliases.items()}
        return out

    async def usage(self, period: str | None = None) -> list[dict[str, Any]]:
        out = [tenant_body(t, await self._usage(t, period)) for t in await self.core.tenants.all()]
        return [{"name": b["name"], **b["usage"]} for b in out]

    async def queues(self) -> dict[str, Any]:
        bands = self.core.cfg.priorities.bands
        models = []
        for m in self.core.cfg.models:
            d = await self.core.queue.depth(m.name)
            replicas = await self.core.queue.replicas(m.name)
            models.append({
                "model": m.name,
                "waiting": dict(zip(bands, d.waiting, strict=True)),
                "oldest_wait_s": round(d.oldest_wait_s, 3),
                "running": d.leased,
                "replicas": [{"id": rid, **load.metrics()} for rid, load in sorted(replicas.items())],
            })  # fmt: skip
        return {"bands": bands, "models": models}

    async def all_batches(self) -> list[dict[str, Any]]:
        out = []
        for t in await self.core.tenants.all():
            jobs, _ = await self.batches.store.jobs(t.name, limit=50)
            out += [{**j.to_openai(), "tenant": t.name} for j in jobs]
        out.sort(key=lambda j: j.get("created_at", 0), reverse=True)
        return out

    async def audit(self, count: int) -> list[dict[str, Any]]:
        if not 1 <= count <= 1000:
            raise InvalidRequest("count must be a whole number from 1 to 1000", param="count")
        entries: Any = await self.core.r.xrevrange(self.core.queue.keys.audit(), count=count)
        return [{"id": _s(i), **{_s(k): _s(v) for k, v in f.items()}} for i, f in entries]


def add_admin_routes(
    app: FastAPI, get_core: Callable[[], GatewayCore], get_batches: Callable[[], BatchService]
) -> None:
    async def admin(request: Request) -> tuple[AdminService, str]:
        svc = AdminService(get_core(), get_batches())
        return svc, await svc.authenticate(request.headers.get("authorization"))

    async def body(svc: AdminService, request: Request) -> Any:
        return await read_body(request, svc.core.cfg.limits.max_request_bytes)

    @app.get("/admin/v1/tenants")
    async def list_tenants(request: Request) -> JSONResponse:
        svc, _ = await admin(request)
        return JSONResponse({"data": await svc.list_tenants()})

    @app.post("/admin/v1/tenants")
    async def create_tenant(request: Request) -> JSONResponse:
        svc, actor = await admin(request)
        return JSONResponse(await svc.create_tenant(await body(svc, request), actor), status_code=201)

    @app.get("/admin/v1/tenants/{name}")
    async def get_tenant(name: str, request: Request) -> JSONResponse:
        svc, _ = await admin(request)
        return JSONResponse(await svc.get_tenant(name, request.query_params.get("period")))

    @app.patch("/admin/v1/tenants/{name}")
    async def update_tenant(name: str, request: Request) -> JSONResponse:
        svc, actor = await admin(request)
        return JSONResponse(await svc.update_tenant(name, await body(svc, request), actor))

    @app.delete("/admin/v1/tenants/{name}")
    async def delete_tenant(name: str, request: Request) -> JSONResponse:
        svc, actor = await admin(request)
        return JSONResponse(await svc.delete_tenant(name, actor))

    @app.post("/admin/v1/tenants/{name}/keys")
    async def create_key(name: str, request: Request) -> JSONResponse:
        svc, actor = await admin(request)
        return JSONResponse(await svc.create_key(name, actor), status_code=201)

    @app.get("/admin/v1/tenants/{name}/keys")
    async def list_keys(name: str, request: Request) -> JSONResponse:
        svc, _ = await admin(request)
        return JSONResponse({"data": await svc.list_keys(name)})

    @app.delete("/admin/v1/tenants/{name}/keys/{prefix}")
    async def revoke_key(name: str, prefix: str, request: Request) -> JSONResponse:
        svc, actor = await admin(request)
        return JSONResponse(await svc.revoke_key(name, prefix, actor))

    @app.get("/admin/v1/tenants/{name}/comparison")
    async def comparison(name: str, request: Request) -> JSONResponse:
        svc, _ = await admin(request)
        days, pairs = (_whole(request, p, d) for p, d in (("days", 7), ("pairs", 20)))
        return JSONResponse(await svc.comparison(name, days, pairs))

    @app.get("/admin/v1/usage")
    async def usage_all(request: Request) -> JSONResponse:
        svc, _ = await admin(request)
        return JSONResponse({"data": await svc.usage(request.query_params.get("period"))})

    @app.get("/admin/v1/queues")
    async def queues(request: Request) -> JSONResponse:
        svc, _ = await admin(request)
        return JSONResponse(await svc.queues())

    @app.get("/admin/v1/batches")
    async def batches(request: Request) -> JSONResponse:
        svc, _ = await admin(request)
        return JSONResponse({"data": await svc.all_batches()})

    @app.get("/admin/v1/audit")
    async def audit_log(request: Request) -> JSONResponse:
        svc, _ = await admin(request)
        raw = request.query_params.get("count", "50")
        if not raw.isdigit():
            raise InvalidRequest("count must be a whole number from 1 to 1000", param="count")
        return JSONResponse({"data": await svc.audit(int(raw))})

    page = (resources.files("ossfleet.api") / "console" / "index.html").read_text()
    headers = {"cache-control": "no-store", **console_security_headers(page)}

    @app.get("/console")
    async def console() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @app.get("/admin/v1/{rest:path}", include_in_schema=False)
    async def unknown(rest: str, request: Request) -> JSONResponse:
        await admin(request)
        raise NotFound(f"no admin route /admin/v1/{rest}")


def console_security_headers(page: str) -> dict[str, str]:
    """The console's CSP (its own inline script and style by hash, API calls to this origin only, no
    frames, forms, plugins or other origins) and the frame and sniffing headers older browsers read."""
    import base64
    import hashlib
    import re

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)

    csp = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {"content-security-policy": csp, "x-frame-options": "DENY", "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer"}  # fmt: skip


def _whole(request: Request, param: str, default: int) -> int:
    raw = request.query_params.get(param)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6):
        raise InvalidRequest(f"{param} must be a whole number", param=param)
    return int(raw)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
