"""Each Lua script's documented arguments against what Python sends it: every script is called through the
real queue and job store on a real Redis, each call recorded on its way, and its arguments checked against
the script's own `-- ARGV:` header (optional groups in brackets, `name...` for one or more) and, for admit,
its options object against the `-- OPTS:` header."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ossfleet.batch.store import JobStore
from ossfleet.control.admission import Admission, GroupMember
from ossfleet.control.queue import Affinity, RequestQueue
from ossfleet.errors import QueueFull
from ossfleet.protocol.work import WorkItem
from ossfleet.redisdb import connect_async

LUA = Path(__file__).resolve().parents[2] / "platform" / "ossfleet" / "control" / "lua"


def _header(text: str, tag: str) -> str:
    """The text of a `-- TAG:` header and its continuation lines (`--` and six spaces or more), without
    commentary (after ': ') or parentheticals."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"-- {tag}:"))
    parts = []
    for i, line in enumerate(lines[start:]):
        if i and not re.match(r"--\s{6,}\S", line):
            break
        text = re.sub(r"\([^)]*\)", "", line[len(f"-- {tag}:") :] if i == 0 else line[2:])
        parts.append(text.split(": ", 1)[0])
        if ": " in text:  # the commentary runs to the header's end
            break
    return " ".join(parts)


def allowed_counts(spec: str) -> tuple[set[int], bool]:
    """The argument counts a spec allows, and whether its last name takes one or more (`name...`)."""
    tokens = re.findall(r"\[|\]|[^\s\[\]]+", spec)

    def parse(i: int) -> tuple[set[int], int]:
        counts = {0}
        while i < len(tokens):
            if tokens[i] == "]":
                return counts, i + 1
            if tokens[i] == "[":
                inner, i = parse(i + 1)
                counts = counts | {c + n for c in counts for n in inner}
                continue
            counts = {c + 1 for c in counts}
            i += 1
        return counts, i

    counts, _ = parse(0)
    return counts, spec.strip().endswith("...")


def opts_mismatch(spec: str, keys: set[str]) -> list[str]:
    """What is wrong with an options object's keys against an OPTS spec: a required name missing, a name the
    spec does not know, a bracketed group given in part (a group's own names come all or none)."""
    tokens = re.findall(r"\[|\]|[^\s\[\]]+", spec)
    wrong: list[str] = []
    known: set[str] = set()

    def group(i: int, required: bool) -> int:
        names = []
        while i < len(tokens) and tokens[i] != "]":
            if tokens[i] == "[":
                i = group(i + 1, False) + 1
                continue
            names.append(tokens[i])
            i += 1
        known.update(names)
        present = [x for x in names if x in keys]
        if required and len(present) < len(names):
            wrong.extend(f"missing {x}" for x in names if x not in keys)
        elif present and len(present) < len(names):
            wrong.append(f"part of group {names}: {present}")
        return i

    group(0, True)
    return wrong + [f"unknown {k}" for k in sorted(keys - known)]


class Spy:
    """Passes a script call through to Redis, keeping its arguments."""

    def __init__(self, name: str, script, calls: list) -> None:
        self.name, self.script, self.calls = name, script, calls

    async def __call__(self, keys=None, args=None, client=None):
        self.calls.append((self.name, list(args or [])))
        return await self.script(keys=keys, args=args, client=client)


async def exercise(url: str, namespace: str, clock=None) -> list[tuple[str, list]]:
    """Every queue and job-store operation once (each script it runs recorded), on the Redis at ``url``."""
    r = connect_async(url)
    q = RequestQueue(r, namespace, bands=3, lease_s=10, **({"clock": clock} if clock else {}))
    store = JobStore(r, namespace)
    calls: list[tuple[str, list]] = []
    q._scripts = {name: Spy(name, s, calls) for name, s in q._scripts.items()}
    store._record = Spy("batch_record", store._record, calls)
    store._transition = Spy("batch_transition", store._transition, calls)
    store._reserve = Spy("batch_reserve", store._reserve, calls)
    store._release_job = Spy("batch_release_job", store._release_job, calls)
    if store._charge is not None:
        store._charge = Spy("batch_charge", store._charge, calls)
    try:

        def adm(rid, **kw):
            return Admission(rid, "t", "m", 1, WorkItem([1], 8), 3, 8, 100, 10**12, "p", 10**6, 10**9, **kw)

        await q.admit(adm("a"))
        await q.admit(adm("b", more=(GroupMember("b2", WorkItem([2], 8), 3, 8, 100),), adapter="X", usage_name="m:X"))
        await q.admit(adm("c"))
        lease = await q.pull("m", "w")  # a
        await q.renew("m", lease.request_id, "w")
        _, b = await q.complete_and_pull("m", lease.request_id, "w", 2, 5, "stop", adapters=Affinity(("X",), True))
        lease = await q.pull("m", "w", adapters=Affinity((), False))  # c: b2's adapter could not be loaded
        _, b2 = await q.complete_and_pull("m", lease.request_id, "w", 2, 5, "stop")
        assert (b.request_id, lease.request_id, b2.request_id) == ("b", "c", "b2")
        await q.fail("m", b.request_id, "w", "boom", retryable=True)
        await q.complete("m", b2.request_id, "w", 1, 1, "stop")
        await q.pull("m", "w", batch_band=False)
        await q.pull("m", "w", batch_band=False, exclude_tenants=["a", "b"])  # a replica's headroom
        await q.reap("m")
        await q.cancel("a", "t")
        await q.admit(adm("d"))
        lease = await q.pull("m", "w")
        await q.release("m", lease.request_id, "w")
        lease = await q.pull("m", "w")
        await q.complete("m", lease.request_id, "w", 1, 1, "stop")
        await q.admit(adm("g"))
        lease = await q.pull("m", "w")
        await q.fail("m", lease.request_id, "w", "refused", retryable=False, status=400)  # the request's fault
        await store.reserve("t", "batch_x", 0, 5, "p", -1)
        await store.record("batch_x", 0, True, "{}", charge=("t", "p", "m", 1, 1, 1), reserved_by="t")
        await store.reserve("t", "batch_x", 1, 5, "p", 100)
        await store.record("batch_x", 1, False, "{}", reserved_by="t")
        await store.release_job("t", "batch_x")
        await store.transition("batch_x", "cancelled", ("in_progress",))
        if q.cluster:
            q.max_queue = 0
            with pytest.raises(QueueFull):  # refused by the model's slot: the reservation is undone
                await q.admit(adm("e"))
            q.max_queue = 100
            await q._run("reserve", q.keys.tenant_slot("t"), json.dumps(_opts(q, "f")))  # a gateway died here
            await q.reconcile(["m"], ["t"], grace_s=0)
    finally:
        await r.aclose()
    return calls


def _opts(q: RequestQueue, rid: str) -> dict:
    return {"tenant": "t", "model": "m", "band": 1, "now_ms": q._now(), "idem": "", "max_queue": 100,
            "budget_limit_nusd": -1, "period": "p", "rpm": 10**6, "tpm": 10**9, "nbands": 3, "weight": "1.0",
            "alert_at_nusd": 0, "max_inflight": 0, "inflight_ttl_ms": 1000, "track_inflight": True,
            "count_rate": True, "adapter": "", "usage_name": "",
            "group": [{"id": rid, "in_tokens": 1, "max_tokens": 1, "reserve_nusd": 1}]}  # fmt: skip


async def test_every_script_is_called_as_its_header_documents(redis_server, redis_cluster, namespace):
    calls = await exercise(redis_server.url, namespace) + await exercise(redis_cluster.url, namespace)
    seen = {name for name, _ in calls}
    assert seen == {p.stem for p in LUA.glob("*.lua")} - {"common"}, "every script is exercised"
    admit_opts = _header((LUA / "admit.lua").read_text(), "OPTS")
    with_opts = set()
    for name, args in calls:
        text = (LUA / f"{name}.lua").read_text()
        counts, variadic = allowed_counts(_header(text, "ARGV"))
        n = len(args)
        ok = n >= max(counts) if variadic else n in counts
        assert ok, f"{name}: {n} arguments sent, its ARGV header allows {sorted(counts)}{'+' if variadic else ''}"
        if "opts" not in _header(text, "ARGV").split():
            continue
        with_opts.add(name)
        opts = json.loads(args[1])
        # reserve and enqueue take admit's options object; every other script its own OPTS header.
        spec = admit_opts if name in ("admit", "reserve", "enqueue") else _header(text, "OPTS")
        wrong = opts_mismatch(spec, set(opts))
        assert not wrong, f"{name}'s options object vs its OPTS header: {wrong}"
        if name in ("admit", "enqueue"):
            assert len(args) - 2 == len(opts["group"]), "one payload per request of the group"
    # A script with more than a handful of arguments takes an options object.
    assert {"admit", "complete", "fail", "pull", "batch_record"} <= with_opts


def test_the_options_check_reads_required_names_and_all_or_none_groups():
    spec = "model id [a b [c d]] [e]"
    assert opts_mismatch(spec, {"model", "id"}) == []
    assert opts_mismatch(spec, {"model", "id", "a", "b", "c", "d", "e"}) == []
    assert sorted(opts_mismatch(spec, {"id", "a"})) == ["missing model", "part of group ['a', 'b']: ['a']"]
    assert opts_mismatch(spec, {"model", "id", "c", "zz"}) == ["part of group ['c', 'd']: ['c']", "unknown zz"]


def test_the_header_parser_reads_optional_groups_and_variadic_names():
    assert allowed_counts("P id owner") == ({3}, False)
    assert allowed_counts("P a b [c d [e f]]") == ({3, 5, 7}, False)
    assert allowed_counts("P opts payload...") == ({3}, True)
    text = "-- x\n-- ARGV: P id (a note) kind('o'|'e')\n--       more [opt]: commentary\n-- Returns: y\n"
    assert _header(text, "ARGV").split() == ["P", "id", "kind", "more", "[opt]"]
