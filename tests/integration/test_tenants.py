"""Tenants in Redis (ossfleet.control.tenants) against a real embedded Redis: seeding, changes, audit, two gateways."""

from __future__ import annotations

import asyncio

import pytest

from ossfleet.config import parse_config
from ossfleet.control.tenants import TenantRegistry, document
from ossfleet.errors import Conflict, InvalidRequest, NotFound
from ossfleet.redisdb import connect_async


def config(namespace: str, budget: float = 10.0) -> dict:
    return {
        "redis": {"namespace": namespace},
        "models": [{"name": "m1", "spec": "gpt-oss-20b", "path": "/nonexistent", "engine": "stub"}],
        "tenants": [{"name": "acme", "budget": {"limit_usd": budget}}, {"name": "globex"}],
    }


async def audit(client, namespace) -> list[dict[str, str]]:
    entries = await client.xrange("{" + namespace + "}:audit")
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]


@pytest.fixture
async def clients(redis_server):
    cs = [connect_async(redis_server.url) for _ in range(2)]
    yield cs
    for c in cs:
        await c.aclose()


async def test_tenants_are_seeded_from_the_config_and_a_file_edit_wins_over_api_changes(clients, namespace):
    r, _ = clients
    reg = TenantRegistry(r, parse_config(config(namespace), "<t>"))
    assert [t.name for t in await reg.all()] == ["acme", "globex"]
    await reg.update("acme", {"limits": {"rpm": 7}}, actor="ops")
    # A gateway restarted on the same file keeps the API's change...
    again = TenantRegistry(r, parse_config(config(namespace), "<t>"))
    assert (await again.get("acme")).limits.rpm == 7  # type: ignore[union-attr]
    # ...a file whose acme changed in git overwrites acme (and leaves globex alone).
    edited = TenantRegistry(r, parse_config(config(namespace, budget=99.0), "<t>"))
    acme = await edited.get("acme")
    assert acme is not None and acme.budget.limit_usd == 99.0 and acme.limits.rpm != 7
    seeded = [e for e in await audit(r, namespace) if e["action"] == "tenant_seeded"]
    assert [e["tenant"] for e in seeded] == ["acme", "globex", "acme"]


async def test_tenants_crud_is_audited_with_the_actor_and_bad_input_changes_nothing(clients, namespace):
    r, _ = clients
    reg = TenantRegistry(r, parse_config(config(namespace), "<t>"))
    t = await reg.create({"name": "initech", "budget": {"limit_usd": 5}, "allowed_models": ["m1"]}, actor="alice")
    assert t.budget.limit_usd == 5 and (await reg.get("initech")) == t
    with pytest.raises(Conflict):
        await reg.create({"name": "initech"}, actor="alice")
    before = await r.get("{" + namespace + "}:tenant:initech")
    for bad, param in (
        ({"allowed_models": ["gpt-5"]}, "tenant"),
        ({"max_band": "vip"}, "tenant"),
        ({"limits": {"rpm": -1}}, "limits.rpm"),
        ({"colour": "red"}, "colour"),
        ({"api_key_sha256": ["0" * 64]}, "api_key_sha256"),
        ({"name": "other"}, "name"),
    ):
        with pytest.raises(InvalidRequest) as e:
            await reg.update("initech", bad, actor="alice")
        assert e.value.param == param, bad
    assert await r.get("{" + namespace + "}:tenant:initech") == before  # nothing changed
    t = await reg.update("initech", {"budget": {"limit_usd": 1}, "weight": 2}, actor="bob")
    assert t.budget.limit_usd == 1 and t.budget.period == "monthly" and t.weight == 2  # nested fields merged
    await reg.delete("initech", actor="carol")
    assert await reg.get("initech") is None
    with pytest.raises(NotFound):
        await reg.delete("initech", actor="carol")
    changes = [(e["action"], e["actor"]) for e in await audit(r, namespace) if e.get("tenant") == "initech"]
    assert changes == [("tenant_created", "alice"), ("tenant_updated", "bob"), ("tenant_deleted", "carol")]


async def test_tenants_a_change_made_through_one_gateway_is_seen_by_another(clients, namespace):
    r1, r2 = clients
    cfg = parse_config(config(namespace), "<t>")
    one, two = TenantRegistry(r1, cfg), TenantRegistry(r2, cfg, refresh_s=1.0)
    assert (await two.get("globex")).limits.rpm == 600  # type: ignore[union-attr]  # cached now
    await one.update("globex", {"limits": {"rpm": 42}}, actor="ops")
    await one.create({"name": "hooli"}, actor="ops")
    # The other gateway re-reads within its refresh interval: wait for the change (bounded).
    for _ in range(200):
        seen = await two.get("globex")
        if seen is not None and seen.limits.rpm == 42:
            break
        await asyncio.sleep(0.05)
    assert seen is not None and seen.limits.rpm == 42
    assert await two.get("hooli") is not None


async def test_tenants_an_update_computed_from_a_stale_read_is_refused(clients, namespace):
    r, _ = clients
    reg = TenantRegistry(r, parse_config(config(namespace), "<t>"))
    _, stale = await reg.read("acme")
    await reg.update("acme", {"weight": 3}, actor="a")
    t, _ = await reg.read("acme")
    assert not await reg._cas("acme", stale, document(t))  # the other admin's write is not lost
    assert (await reg.read("acme"))[0].weight == 3


async def test_tenants_concurrent_first_requests_all_wait_for_the_seeding(clients, namespace):
    # A gateway's first requests come together: none may read the tenants before the file's are written.
    r, _ = clients
    cfg = config(namespace)
    cfg["tenants"] = [{"name": f"t{i}"} for i in range(60)]
    reg = TenantRegistry(r, parse_config(cfg, "<t>"))
    seen = await asyncio.gather(*(reg.get(f"t{i}") for i in range(60)))
    assert all(t is not None for t in seen)


async def test_hardening_admin_numbers_that_could_not_be_used_are_refused_and_change_nothing(clients, namespace):
    """#33 finding 6: an infinite limit was stored (then every read of the tenant failed), a weight of
    1e-320 starved the tenant's requests forever."""
    r, _ = clients
    reg = TenantRegistry(r, parse_config(config(namespace), "<t>"))
    await reg.create({"name": "gamma"}, actor="ops")
    before = await r.get("{" + namespace + "}:tenant:gamma")
    for bad, param in (
        ({"budget": {"limit_usd": float("inf")}}, "budget.limit_usd"),
        ({"budget": {"limit_usd": float("nan")}}, "budget.limit_usd"),
        ({"budget": {"limit_usd": 1e30}}, "budget.limit_usd"),
        ({"weight": 1e-320}, "weight"),
        ({"weight": float("inf")}, "weight"),
    ):
        with pytest.raises(InvalidRequest) as e:
            await reg.update("gamma", bad, actor="ops")
        assert e.value.param == param, bad
        with pytest.raises(InvalidRequest):
            await reg.create({"name": "delta", **bad}, actor="ops")
    assert await r.get("{" + namespace + "}:tenant:gamma") == before
    assert [t.name for t in await reg.all()] == ["acme", "gamma", "globex"]  # every tenant still reads
