"""Tenants and their API keys.

Keys are random bearer tokens. Redis stores only their SHA-256 digest,
mapped to the tenant (``{ns}:apikey:<digest>``); a key is checked by hashing
what the caller presented and looking the digest up, so no stored secret is
ever compared byte by byte (and a digest of a 256-bit random key needs no
slow hash). Keys come from the environment variable a tenant names, from
digests in the config, or from ``ossfleet keys create``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ossfleet.errors import AuthenticationFailed

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    from ossfleet.config import PlatformConfig

KEY_PREFIX = "osf-"


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _apikey(namespace: str, digest: str) -> str:
    return "{" + namespace + "}:apikey:" + digest


def register_key_digest(client: redis.Redis, namespace: str, tenant: str, digest: str) -> None:
    client.set(_apikey(namespace, digest), tenant)


def register_key(client: redis.Redis, namespace: str, tenant: str, key: str) -> None:
    register_key_digest(client, namespace, tenant, key_digest(key))


def revoke_key(client: redis.Redis, namespace: str, key_or_digest: str) -> bool:
    digest = key_or_digest if len(key_or_digest) == 64 else key_digest(key_or_digest)
    return bool(client.delete(_apikey(namespace, digest)))


def sync_config_keys(client: redis.Redis, cfg: PlatformConfig, environ: Mapping[str, str]) -> list[str]:
    """Register every key the config names (digests, and keys in named env vars).

    Returns the tenants whose ``api_key_env`` is unset, so a caller can say so.
    """
    ns = cfg.redis.namespace
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


async def authenticate(client: redis.asyncio.Redis, namespace: str, authorization: str | None) -> str:
    """The tenant that owns the presented key, or AuthenticationFailed."""
    key = bearer_token(authorization)
    tenant = await client.get(_apikey(namespace, key_digest(key)))
    if tenant is None:
        raise AuthenticationFailed("invalid API key")
    return tenant.decode() if isinstance(tenant, bytes) else str(tenant)


def period_id(period: str, now: datetime | None = None) -> str:
    """The budget period a moment falls in: '2026-11' (monthly) or '2026-11-23' (daily), UTC."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%d" if period == "daily" else "%Y-%m")
