"""Tenants' and admins' API keys: issued, registered, revoked, and checked on every call.

Keys are random bearer tokens. Redis stores only their SHA-256 digest,
mapped to the tenant (``{ns}:apikey:<digest>``); a key is checked by hashing
what the caller presented and looking the digest up, so no stored secret is
ever compared byte by byte (and a digest of a 256-bit random key needs no
slow hash). Keys come from the environment variable a tenant names, from
digests in the config, or from ``ossfleet keys create``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ossfleet.control.audit import audit, audit_async
from ossfleet.control.keyspace import keyspace
from ossfleet.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    from ossfleet.config import PlatformConfig, TenantConfig

KEY_PREFIX = "osf-"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def register_key_digest(client: redis.Redis, namespace: str, tenant: str, digest: str, actor: str = "config") -> None:
    """Map a key digest to its tenant (an audit event names the digest's first 12 hex digits only)."""
    previous = client.set(keyspace(namespace).api_key(digest), tenant, get=True)
    client.sadd(keyspace(namespace).tenant_keys(tenant), digest)
    if previous is None or (previous.decode() if isinstance(previous, bytes) else previous) != tenant:
        audit(client, namespace, "key_registered", tenant=tenant, key_digest_prefix=digest[:12], actor=actor)


def register_key(client: redis.Redis, namespace: str, tenant: str, key: str, actor: str = "config") -> None:
    register_key_digest(client, namespace, tenant, key_digest(key), actor)


def revoke_key(client: redis.Redis, namespace: str, key_or_digest: str, actor: str = "cli") -> bool:
    digest = key_or_digest if len(key_or_digest) == 64 else key_digest(key_or_digest)
    tenant = client.get(keyspace(namespace).api_key(digest))
    removed = bool(client.delete(keyspace(namespace).api_key(digest)))
    if removed:
        name = tenant.decode() if isinstance(tenant, bytes) else str(tenant)
        client.srem(keyspace(namespace).tenant_keys(name), digest)
        audit(client, namespace, "key_revoked", tenant=name, key_digest_prefix=digest[:12], actor=actor)
    return removed


def _policy(t: TenantConfig) -> str:
    """The parts of a tenant's config an auditor asks about, as stable JSON (no keys)."""
    return json.dumps(t.model_dump(mode="json", exclude={"api_key_env", "api_key_sha256"}), sort_keys=True)


def record_tenant_changes(client: redis.Redis, cfg: PlatformConfig) -> list[str]:
    """Audit every tenant whose budget, limits or access differ from the last config seen."""
    changed = []
    key = keyspace(cfg.redis.namespace).tenant_config()
    for t in cfg.tenants:
        now = _policy(t)
        before = client.hget(key, t.name)
        before_s = before.decode() if isinstance(before, bytes) else before
        if before_s != now:
            client.hset(key, t.name, now)
            action = "tenant_created" if before_s is None else "tenant_changed"
            audit(client, cfg.redis.namespace, action, tenant=t.name, config=now)
            changed.append(t.name)
    return changed


def sync_config_keys(client: redis.Redis, cfg: PlatformConfig, environ: Mapping[str, str]) -> list[str]:
    """Register every key the config names (digests, and keys in named env vars).

    Returns the tenants whose ``api_key_env`` is unset, so a caller can say so.
    """
    ns = cfg.redis.namespace
    record_tenant_changes(client, cfg)
    unset = []
    for t in cfg.tenants:
        for digest in t.api_key_sha256:
            register_key_digest(client, ns, t.name, digest)
        if t.api_key_env:
            key = environ.get(t.api_key_env)
            if key:
                register_key(client, ns, t.name, key)
            else:
                unset.append(t.name)
    return unset


def bearer_token(authorization: str | None) -> str:
    """The key from an ``Authorization: Bearer <key>`` header (or gRPC metadata)."""
    if not authorization:
        raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("malformed Authorization header: expected 'Bearer <key>'")
    return token.strip()


def register_admin_key(client: redis.Redis, namespace: str, admin: str, key: str, actor: str = "config") -> str:
    """An admin key: it reaches /admin and the console, as ``admin`` (the actor its changes are audited under).
    Recorded with its name, creation time and maker (``admin_keys``), so it can be listed and revoked.
    Returns its digest."""
    ks = keyspace(namespace)
    digest = key_digest(key)
    if client.set(ks.admin_key(digest), admin, get=True) is None:
        record = {"name": admin, "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "actor": actor}
        client.hset(ks.admin_keys(), digest, json.dumps(record))
        audit(client, namespace, "admin_key_registered", admin=admin, key_digest_prefix=digest[:12], actor=actor)
    return digest


def admin_keys(client: redis.Redis, namespace: str) -> list[dict[str, str]]:
    """Every admin key's record (name, created_at, actor) with its digest's first 12 hex digits, oldest first."""
    out = []
    for digest, raw in client.hgetall(keyspace(namespace).admin_keys()).items():
        d = digest.decode() if isinstance(digest, bytes) else str(digest)
        out.append({**json.loads(raw), "digest_prefix": d[:12]})
    return sorted(out, key=lambda r: (r.get("created_at", ""), r["digest_prefix"]))


def revoke_admin_key(client: redis.Redis, namespace: str, digest_prefix: str, actor: str) -> str:
    """Revoke the admin key whose digest starts with ``digest_prefix`` (8+ hex digits, one key); its name."""
    if len(digest_prefix) < 8 or any(c not in "0123456789abcdef" for c in digest_prefix):
        raise InvalidRequest("give at least 8 hex digits of the key's digest", param="digest_prefix")
    ks = keyspace(namespace)
    digests = [d.decode() if isinstance(d, bytes) else str(d) for d in client.hkeys(ks.admin_keys())]
    found = [d for d in digests if d.startswith(digest_prefix)]
    if len(found) != 1:
        raise NotFound(f"{len(found)} admin keys have a digest starting {digest_prefix!r}; give more digits")
    name = client.get(ks.admin_key(found[0]))
    client.delete(ks.admin_key(found[0]))
    client.hdel(ks.admin_keys(), found[0])
    audit(client, namespace, "admin_key_revoked", key_digest_prefix=found[0][:12], actor=actor)
    return name.decode() if isinstance(name, bytes) else str(name or "")


async def authenticate_admin(client: redis.asyncio.Redis, namespace: str, authorization: str | None) -> str:
    """The admin that owns the presented key; a tenant's key is PermissionDenied, anything else 401."""
    digest = key_digest(bearer_token(authorization))
    admin = await client.get(keyspace(namespace).admin_key(digest))
    if admin is not None:
        return admin.decode() if isinstance(admin, bytes) else str(admin)
    if await client.exists(keyspace(namespace).api_key(digest)):
        raise PermissionDenied("this is a tenant's key; the admin API needs an admin key")
    raise AuthenticationFailed("invalid admin key")


async def issue_key(client: redis.asyncio.Redis, namespace: str, tenant: str, actor: str) -> tuple[str, str]:
    """A new key for the tenant: (the key, shown once; its digest)."""
    key = new_api_key()
    digest = key_digest(key)
    await client.set(keyspace(namespace).api_key(digest), tenant)
    await client.sadd(keyspace(namespace).tenant_keys(tenant), digest)
    await audit_async(client, namespace, "key_issued", tenant=tenant, key_digest_prefix=digest[:12], actor=actor)
    return key, digest


async def tenant_key_digests(client: redis.asyncio.Redis, namespace: str, tenant: str) -> list[str]:
    return sorted(_s(d) for d in await client.smembers(keyspace(namespace).tenant_keys(tenant)))


async def revoke_tenant_key(client: redis.asyncio.Redis, namespace: str, tenant: str, prefix: str, actor: str) -> str:
    """Revoke the tenant's key whose digest starts with ``prefix`` (at least 8 hex digits, unambiguous)."""
    if len(prefix) < 8:
        raise NotFound("give at least 8 hex digits of the key's digest", param="key")
    found = [d for d in await tenant_key_digests(client, namespace, tenant) if d.startswith(prefix)]
    if len(found) != 1:
        raise NotFound(f"tenant {tenant!r} has {len(found)} keys whose digest starts with {prefix!r}", param="key")
    digest = found[0]
    await client.delete(keyspace(namespace).api_key(digest))
    await client.srem(keyspace(namespace).tenant_keys(tenant), digest)
    await audit_async(client, namespace, "key_revoked", tenant=tenant, key_digest_prefix=digest[:12], actor=actor)
    return digest


async def revoke_all_keys(client: redis.asyncio.Redis, namespace: str, tenant: str, actor: str) -> int:
    digests = await tenant_key_digests(client, namespace, tenant)
    for d in digests:
        await client.delete(keyspace(namespace).api_key(d))
        await audit_async(client, namespace, "key_revoked", tenant=tenant, key_digest_prefix=d[:12], actor=actor)
    await client.delete(keyspace(namespace).tenant_keys(tenant))
    return len(digests)


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def authenticate(client: redis.asyncio.Redis, namespace: str, authorization: str | None) -> str:
    """The tenant that owns the presented key, or AuthenticationFailed."""
    key = bearer_token(authorization)
    tenant = await client.get(keyspace(namespace).api_key(key_digest(key)))
    if tenant is None:
        raise AuthenticationFailed("invalid API key")
    return tenant.decode() if isinstance(tenant, bytes) else str(tenant)
