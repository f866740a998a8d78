"""Tenants in Redis: seeded from the config file, changed through the admin API, seen by every gateway.

Each tenant is a JSON document (its ``TenantConfig`` without key fields) at ``tenant:<name>``; the set
``tenants`` lists them, and ``tenants:version`` counts changes. A gateway keeps them in memory and
re-reads them when the version moved, checking it at most once per ``refresh_s`` (1 s): a change made
through any gateway is seen by all within about a second, with no redeploy.

The config file stays the way to declare tenants in git. On start, a tenant of the file is written
to Redis when its definition differs from the one last seeded (``tenantseed`` holds a digest per
tenant): an edit in git wins over earlier API changes to that tenant, while a file that did not change
leaves API changes alone. A tenant created through the API lives until deleted; one removed from the
file stays until deleted through the API.

Every change is appended to the audit stream with its actor. Changes are compare-and-set on the
document, so two admins updating one tenant at once never lose an update silently (the second gets a
409 and retries). A budget lowered below what is already reserved refuses new requests (admission
compares against the new limit) and lets running ones finish.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ossfleet.config import TenantConfig
from ossfleet.control.audit import audit_async
from ossfleet.control.keyspace import KeySpace
from ossfleet.errors import Conflict, InvalidRequest, NotFound

if TYPE_CHECKING:
    import redis.asyncio

    from ossfleet.config import PlatformConfig

KEY_FIELDS = {"api_key_env", "api_key_sha256"}

# Replace a tenant's document only if it is still the one the change was computed from.
_CAS = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
end
redis.call('INCR', KEYS[3])
return 1
"""


def document(t: TenantConfig) -> str:
    """A tenant as stored: stable JSON without key fields."""
    return json.dumps(t.model_dump(mode="json", exclude=KEY_FIELDS), sort_keys=True, separators=(",", ":"))


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class TenantRegistry:
    """The platform's tenants as Redis holds them, cached per process."""

    def __init__(self, client: redis.asyncio.Redis, cfg: PlatformConfig, refresh_s: float = 1.0) -> None:
        self.r = client
        self.cfg = cfg
        self.ns = cfg.redis.namespace
        self.keys = KeySpace(self.ns)
        self.refresh_s = refresh_s
        self._cache: dict[str, TenantConfig] = {}
        self._version: str | None = None
        self._checked = float("-inf")
        self._seeding: asyncio.Future[list[str]] | None = None
        self._loading: asyncio.Future[None] | None = None

    # -- reading ------------------------------------------------------------------------------------

    async def get(self, name: str) -> TenantConfig | None:
        await self._refresh()
        return self._cache.get(name)

    async def all(self) -> list[TenantConfig]:
        await self._refresh()
        return sorted(self._cache.values(), key=lambda t: t.name)

    async def seeded(self) -> None:
        """Seed once per process; every caller waits for the same seeding (a failed one is tried again)."""
        if self._seeding is None or (self._seeding.done() and self._seeding.exception() is not None):
            self._seeding = asyncio.ensure_future(self.seed())
            self._version = None  # read everything again once seeded
        await asyncio.shield(self._seeding)

    async def _refresh(self, force: bool = False) -> None:
        """Re-read the tenants if their version moved (checked at most every ``refresh_s``); callers that
        come while a read is under way wait for it rather than see what was there before."""
        await self.seeded()
        if self._loading is not None and not self._loading.done():
            await asyncio.shield(self._loading)
            if not force:
                return
        now = time.monotonic()
        if not force and self._version is not None and now - self._checked < self.refresh_s:
            return
        self._checked = now
        self._loading = asyncio.ensure_future(self._load(force))
        await asyncio.shield(self._loading)

    async def _load(self, force: bool) -> None:
        version = await self.r.get(self.keys.tenants_version())
        v = _s(version) if version is not None else "0"
        if v == self._version and not force:
            return
        names = sorted(_s(n) for n in await self.r.smembers(self.keys.tenants()))
        docs = await self.r.mget([self.keys.tenant(n) for n in names]) if names else []
        cache = {}
        for n, d in zip(names, docs, strict=True):
            if d is not None:
                cache[n] = TenantConfig.model_validate_json(d)
        self._cache, self._version = cache, v

    async def seed(self) -> list[str]:
        """Write the config file's tenants whose definition changed since last seeded; returns their names."""
        changed = []
        for t in self.cfg.tenants:
            doc = document(t)
            digest = hashlib.sha256(doc.encode()).hexdigest()
            prior = await self.r.hget(self.keys.tenant_seed(), t.name)
            if prior is not None and _s(prior) == digest:
                continue
            async with self.r.pipeline(transaction=True) as p:
                p.set(self.keys.tenant(t.name), doc)
                p.sadd(self.keys.tenants(), t.name)
                p.hset(self.keys.tenant_seed(), t.name, digest)
                p.incr(self.keys.tenants_version())
                await p.execute()
            await audit_async(self.r, self.ns, "tenant_seeded", tenant=t.name, actor="config", config=doc)
            changed.append(t.name)
        return changed

    # -- changing (the admin API) -------------------------------------------------------------------

    def _validated(self, data: dict[str, Any]) -> TenantConfig:
        bad = KEY_FIELDS & set(data)
        if bad:
            raise InvalidRequest(
                f"{sorted(bad)[0]} cannot be set here: issue keys with the keys API", param=sorted(bad)[0]
            )
        try:
            t = TenantConfig.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            msg = f"unknown field {where}" if first["type"] == "extra_forbidden" else first["msg"]
            raise InvalidRequest(f"{where}: {msg}" if where else msg, param=where) from None
        try:
            self.cfg.check_tenant(t)
        except ValueError as e:
            raise InvalidRequest(str(e), param="tenant") from None
        return t

    async def _cas(self, name: str, before: str, after: str) -> bool:
        keys = [self.keys.tenant(name), self.keys.tenants(), self.keys.tenants_version()]
        ok = await self.r.eval(_CAS, 3, *keys, before, after, name)
        if ok:
            await self._refresh(force=True)
        return bool(ok)

    async def create(self, data: dict[str, Any], actor: str) -> TenantConfig:
        await self.seeded()
        t = self._validated(data)
        doc = document(t)
        if not await self._cas(t.name, "", doc):
            raise Conflict(f"tenant {t.name!r} already exists", param="name")
        await audit_async(self.r, self.ns, "tenant_created", tenant=t.name, actor=actor, config=doc)
        return t

    async def read(self, name: str) -> tuple[TenantConfig, str]:
        """A tenant as Redis holds it now (not the cache), and its document for a compare-and-set."""
        await self.seeded()
        raw = await self.r.get(self.keys.tenant(name))
        if raw is None:
            raise NotFound(f"no tenant {name!r}", param="name")
        return TenantConfig.model_validate_json(raw), _s(raw)

    async def update(self, name: str, patch: dict[str, Any], actor: str) -> TenantConfig:
        """Merge ``patch`` (top-level fields; nested sections merged one level deep) into the tenant."""
        if "name" in patch and patch["name"] != name:
            raise InvalidRequest("a tenant cannot be renamed", param="name")
        current, before = await self.read(name)
        data = current.model_dump(mode="json", exclude=KEY_FIELDS)
        for k, v in patch.items():
            if isinstance(v, dict) and isinstance(data.get(k), dict):
                data[k] = {**data[k], **v}
            else:
                data[k] = v
        t = self._validated(data)
        doc = document(t)
        if not await self._cas(name, before, doc):
            raise Conflict(f"tenant {name!r} changed meanwhile; read it again and retry", param="name")
        await audit_async(self.r, self.ns, "tenant_updated", tenant=name, actor=actor, config=doc)
        return t

    async def delete(self, name: str, actor: str) -> None:
        _, before = await self.read(name)
        if not await self._cas(name, before, ""):
            raise Conflict(f"tenant {name!r} changed meanwhile; retry", param="name")
        await audit_async(self.r, self.ns, "tenant_deleted", tenant=name, actor=actor)
