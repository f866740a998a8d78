"""Python and Lua name every key the same way: KeySpace's methods against common.lua's k(), run on a real
Redis; and every key family a script builds has its KeySpace method."""

from __future__ import annotations

import re
from pathlib import Path

from ossfleet.control.keyspace import KeySpace
from ossfleet.redisdb import connect

LUA = Path(__file__).resolve().parents[2] / "platform" / "ossfleet" / "control" / "lua"

# Each family the scripts build: the Lua builder and its arguments, and the KeySpace method naming the same key.
FAMILIES = {
    "req": ("km", ("m", "req", "r1"), lambda ks: ks.req("m", "r1")),
    "stream": ("km", ("m", "stream", "r1"), lambda ks: ks.stream("m", "r1")),
    "lane": ("km", ("m", "lane", 1, "acme"), lambda ks: ks.lane("m", 1, "acme")),
    "ready": ("km", ("m", "ready", 1), lambda ks: ks.ready("m", 1)),
    "wait": ("km", ("m", "wait", 1), lambda ks: ks.wait("m", 1)),
    "vtc": ("km", ("m", "vtc"), lambda ks: ks.vtc("m")),
    "leases": ("km", ("m", "leases"), lambda ks: ks.leases("m")),
    "delayed": ("km", ("m", "delayed"), lambda ks: ks.delayed("m")),
    "dead": ("km", ("m", "dead"), lambda ks: ks.dead("m")),
    "owed": ("km", ("m", "owed"), lambda ks: ks.owed("m")),
    "bell": ("km", ("m", "bell"), lambda ks: ks.bell("m")),
    "cancel": ("km", ("m", "cancel"), lambda ks: ks.cancel("m")),
    "arrivals": ("km", ("m", "arrivals"), lambda ks: ks.arrivals("m")),
    "budget": ("kt", ("acme", "budget", "2026-12"), lambda ks: ks.budget("acme", "2026-12")),
    "usage": ("kt", ("acme", "usage", "2026-12"), lambda ks: ks.usage("acme", "2026-12")),
    "inflight": ("kt", ("acme", "inflight"), lambda ks: ks.inflight("acme")),
    "idem": ("kt", ("acme", "idem", "k1"), lambda ks: ks.idem("acme", "k1")),
    "rl": ("kt", ("acme", "rl", "req", 29000000), lambda ks: ks.rate("req", "acme", 29000000)),
    "alerted": ("kt", ("acme", "alerted", "2026-12"), lambda ks: ks.alerted("acme", "2026-12")),
    "resv": ("kt", ("acme", "resv", "r1"), lambda ks: ks.resv("acme", "r1")),
    "pending": ("kt", ("acme", "pending"), lambda ks: ks.pending("acme")),
    "bcharged": ("kt", ("acme", "bcharged", "batch_1"), lambda ks: ks.batch_charged("acme", "batch_1")),
    "bresv": ("kt", ("acme", "bresv", "batch_1"), lambda ks: ks.batch_reserved("acme", "batch_1")),
    "alerts": ("kg", ("alerts",), lambda ks: ks.alerts()),
    "batch": ("kg", ("batch", "batch_1"), lambda ks: ks.batch("batch_1")),
    "bres": ("kg", ("bres", "batch_1"), lambda ks: ks.batch_results("batch_1")),
    "activebatches": ("kg", ("activebatches",), lambda ks: ks.batches_active()),
}


def _lua_arg(v: object) -> str:
    return str(v) if isinstance(v, int) else f"'{v}'"


def test_every_key_a_script_builds_is_named_the_same_by_keyspace(redis_server):
    ks = KeySpace("ksns")
    calls = [f"{fn}({', '.join(_lua_arg(a) for a in args)})" for fn, args, _ in FAMILIES.values()]
    script = "local CLUSTER = false\n" + (LUA / "common.lua").read_text() + "\nreturn {" + ", ".join(calls) + "}"
    client = connect(redis_server.url)
    try:
        from_lua = [x.decode() for x in client.eval(script, 1, ks.slot(), ks.namespace)]
    finally:
        client.close()
    assert from_lua == [make(ks) for _, _, make in FAMILIES.values()]


def test_no_script_builds_a_key_family_keyspace_does_not_know():
    used = set()
    for path in LUA.glob("*.lua"):
        text = path.read_text()
        used |= set(re.findall(r"\bkg\('([a-z]+)'", text))
        used |= set(re.findall(r"\bk[mt]\([a-z_]+, '([a-z]+)'", text))
    assert used, "no km/kt/kg(...) call found: the pattern is stale"
    assert used <= set(FAMILIES), f"families only Lua names: {sorted(used - set(FAMILIES))}"


def test_model_and_tenant_state_have_slots_of_their_own():
    # On a cluster each model's queue, and each tenant's money, hash to their own slot (the tag).
    ks = KeySpace("n")
    assert {ks.req("m", "r"), ks.lane("m", 0, "t"), ks.stream("m", "r")} <= {k for k in _tagged(ks, "{n:m:m}")}
    assert ks.budget("t", "p").startswith("{n:t:t}:") and ks.resv("t", "r").startswith("{n:t:t}:")
    assert ks.batch("b").startswith("{n}:") and ks.tenants().startswith("{n}:")


def _tagged(ks: KeySpace, tag: str) -> list[str]:
    keys = [ks.req("m", "r"), ks.lane("m", 0, "t"), ks.stream("m", "r"), ks.budget("t", "p")]
    return [k for k in keys if k.startswith(tag + ":")]


def test_families_are_distinct_for_any_tenant_name():
    # A tenant may be named like a family's fixed part (tenant names allow "active", "version"): no two
    # families' keys may then meet.
    ks = KeySpace("n")
    assert ks.batches("active") != ks.batches_active()
    assert ks.tenant("version") != ks.tenants_version()


def test_the_scan_patterns_cover_a_namespace_and_no_other(redis_server, namespace):
    client = connect(redis_server.url)
    try:
        mine, other = KeySpace(namespace), KeySpace(namespace + "x")
        for ks in (mine, other):
            for key in (ks.req("m", "r"), ks.budget("t", "p"), ks.batch("b"), ks.tenants()):
                client.set(key, "1")
        found = {k.decode() for pattern in mine.patterns() for k in client.scan_iter(match=pattern)}
        assert found == {mine.req("m", "r"), mine.budget("t", "p"), mine.batch("b"), mine.tenants()}
    finally:
        client.close()
