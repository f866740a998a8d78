"""Keys and tenant changes on the real embedded Redis: digests only, every change audited."""

from __future__ import annotations

import pytest

from ossfleet.config import parse_config
from ossfleet.control.apikeys import authenticate, key_digest, new_api_key, register_key, revoke_key, sync_config_keys
from ossfleet.control.keyspace import KeySpace
from ossfleet.errors import AuthenticationFailed
from ossfleet.redisdb import connect, connect_async


def config(namespace: str, limit: float = 10.0):
    return parse_config({
        "redis": {"namespace": namespace},
        "models": [{"name": "m", "spec": "gpt-oss-20b", "path": "/x"}],
        "tenants": [{"name": "acme", "api_key_env": "ACME_KEY", "budget": {"limit_usd": limit}}],
    })  # fmt: skip


def audit_events(r, namespace):
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange("{" + namespace + "}:audit")]


async def test_keys_are_stored_as_digests_and_every_change_is_audited(redis_server, namespace):
    r = connect(redis_server.url)
    key = new_api_key()
    assert sync_config_keys(r, config(namespace), {"ACME_KEY": key}) == []
    stored = [k.decode() for k in r.scan_iter(match="{" + namespace + "}:apikey:*")]
    assert stored == ["{" + namespace + "}:apikey:" + key_digest(key)]
    every = [k for pattern in KeySpace(namespace).patterns() for k in r.scan_iter(match=pattern)]
    strings = [r.get(k) for k in every if r.type(k) == b"string"]
    assert strings and all(key.encode() not in v for v in strings)  # the key itself is stored nowhere
    client = connect_async(redis_server.url)
    assert await authenticate(client, namespace, f"Bearer {key}") == "acme"
    sync_config_keys(r, config(namespace, limit=20.0), {"ACME_KEY": key})  # budget raised, same key
    assert revoke_key(r, namespace, key)
    with pytest.raises(AuthenticationFailed):
        await authenticate(client, namespace, f"Bearer {key}")
    await client.aclose()
    events = audit_events(r, namespace)
    assert [e["action"] for e in events] == ["tenant_created", "key_registered", "tenant_changed", "key_revoked"]
    assert '"limit_usd": 20.0' in events[2]["config"]
    assert all(key not in str(e) for e in events)  # a digest prefix at most, never the key
    assert events[1]["key_digest_prefix"] == key_digest(key)[:12]


def test_registering_the_same_key_again_is_not_a_new_event(redis_server, namespace):
    r = connect(redis_server.url)
    key = new_api_key()
    register_key(r, namespace, "acme", key)
    register_key(r, namespace, "acme", key)
    assert [e["action"] for e in audit_events(r, namespace)] == ["key_registered"]


async def test_hardening_admin_keys_have_a_name_a_creation_time_and_can_be_revoked(redis_server, namespace):
    """#33 finding 7: admin keys piled up (one per `ossfleet up`) and could not be revoked."""
    from ossfleet.control.apikeys import admin_keys, authenticate_admin, register_admin_key, revoke_admin_key
    from ossfleet.errors import InvalidRequest, NotFound

    r, ar = connect(redis_server.url), connect_async(redis_server.url)
    alice, bob = new_api_key(), new_api_key()
    digest = register_admin_key(r, namespace, "alice", alice, actor="test")
    register_admin_key(r, namespace, "bob", bob, actor="test")
    listed = admin_keys(r, namespace)
    assert {k["name"] for k in listed} == {"alice", "bob"}
    assert all(k["created_at"] and k["actor"] == "test" and len(k["digest_prefix"]) == 12 for k in listed)
    assert alice not in str(listed) and digest not in str(listed)  # no key, nor its whole digest
    with pytest.raises(InvalidRequest):
        revoke_admin_key(r, namespace, "abc", actor="test")
    with pytest.raises(NotFound):
        revoke_admin_key(r, namespace, "f" * 12 if not digest.startswith("f" * 12) else "0" * 12, actor="test")
    assert await authenticate_admin(ar, namespace, f"Bearer {alice}") == "alice"
    assert revoke_admin_key(r, namespace, digest[:10], actor="test") == "alice"
    with pytest.raises(AuthenticationFailed):  # at once, on every gateway: the key's record is gone
        await authenticate_admin(ar, namespace, f"Bearer {alice}")
    assert await authenticate_admin(ar, namespace, f"Bearer {bob}") == "bob"
    assert [k["name"] for k in admin_keys(r, namespace)] == ["bob"]
    assert "admin_key_revoked" in [e["action"] for e in audit_events(r, namespace)]
    r.close()
    await ar.aclose()
