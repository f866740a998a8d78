"""Python and Lua name every key the same way: KeySpace's methods against common.lua's k(), run on a real
Redis; and every key family a script builds has its KeySpace method."""

from __future__ import annotations

import re
from pathlib import Path

from ossfleet.keyspace import KeySpace
from ossfleet.redisdb import connect

LUA = Path(__file__).resolve().parents[2] / "platform" / "ossfleet" / "lua"

# Each family the scripts build: the Lua call's arguments, and the KeySpace method that names the same key.
FAMILIES = {
    "req": (("r1",), lambda ks: ks.req("r1")),
    "stream": (("r1",), lambda ks: ks.stream("r1")),
    "lane": (("m", 1, "acme"), lambda ks: ks.lane("m", 1, "acme")),
    "ready": (("m", 1), lambda ks: ks.ready("m", 1)),
    "wait": (("m", 1), lambda ks: ks.wait("m", 1)),
    "vtc": (("m",), lambda ks: ks.vtc("m")),
    "leases": (("m",), lambda ks: ks.leases("m")),
    "delayed": (("m",), lambda ks: ks.delayed("m")),
    "dead": (("m",), lambda ks: ks.dead("m")),
    "bell": (("m",), lambda ks: ks.bell("m")),
    "cancel": (("m",), lambda ks: ks.cancel("m")),
    "arrivals": (("m",), lambda ks: ks.arrivals("m")),
    "budget": (("acme", "2026-12"), lambda ks: ks.budget("acme", "2026-12")),
    "usage": (("acme", "2026-12"), lambda ks: ks.usage("acme", "2026-12")),
    "inflight": (("acme",), lambda ks: ks.inflight("acme")),
    "idem": (("acme", "k1"), lambda ks: ks.idem("acme", "k1")),
    "rl": (("req", "acme", 29000000), lambda ks: ks.rate("req", "acme", 29000000)),
    "alerted": (("acme", "2026-12"), lambda ks: ks.alerted("acme", "2026-12")),
    "alerts": ((), lambda ks: ks.alerts()),
    "batch": (("batch_1",), lambda ks: ks.batch("batch_1")),
    "bres": (("batch_1",), lambda ks: ks.batch_results("batch_1")),
    "activebatches": ((), lambda ks: ks.batches_active()),
}


def _lua_arg(v: object) -> str:
    return str(v) if isinstance(v, int) else f"'{v}'"


def test_every_key_a_script_builds_is_named_the_same_by_keyspace(redis_server):
    ks = KeySpace("ksns")
    calls = [f"k('{name}'{''.join(', ' + _lua_arg(a) for a in args)})" for name, (args, _) in FAMILIES.items()]
    script = (LUA / "common.lua").read_text() + "\nreturn {" + ", ".join(calls) + "}"
    client = connect(redis_server.url)
    try:
        from_lua = [x.decode() for x in client.eval(script, 1, ks.slot(), ks.prefix)]
    finally:
        client.close()
    assert from_lua == [make(ks) for _, make in FAMILIES.values()]


def test_no_script_builds_a_key_family_keyspace_does_not_know():
    used = set()
    for path in LUA.glob("*.lua"):
        used |= set(re.findall(r"\bk\('([a-z]+)'", path.read_text()))
    assert used, "no k(...) call found: the pattern is stale"
    assert used <= set(FAMILIES), f"families only Lua names: {sorted(used - set(FAMILIES))}"


def test_families_are_distinct_for_any_tenant_name():
    # A tenant may be named like a family's fixed part (tenant names allow "active", "version"): no two
    # families' keys may then meet.
    ks = KeySpace("n")
    assert ks.batches("active") != ks.batches_active()
    assert ks.tenant("version") != ks.tenants_version()
