"""Adapter affinity in the queue scripts, against a real embedded Redis: a replica takes work for the
adapters it holds before work it would have to load an adapter for, within priority bands and the aging
bound; adapter usage is recorded under "<model>:<adapter>"."""

from __future__ import annotations

from ossfleet.control.admission import Admission
from ossfleet.control.queue import Affinity
from ossfleet.protocol.work import WorkItem


def adm(rid, tenant="a", band=1, adapter="") -> Admission:
    return Admission(
        request_id=rid, tenant=tenant, model="m", band=band, item=WorkItem([1], 20), input_tokens=10,
        max_tokens=20, reserve_nusd=100, budget_limit_nusd=10**12, period="2026-11", rpm=10**6, tpm=10**9,
        adapter=adapter, usage_name=f"m:{adapter.split('@')[0]}" if adapter else "",
    )  # fmt: skip


async def order(q, held, can_load=True, n=10):
    out = []
    for _ in range(n):
        lease = await q.pull("m", "rep", adapters=Affinity(tuple(held), can_load))
        if lease is None:
            break
        out.append(lease.request_id)
    return out


async def test_an_adapter_replica_takes_work_for_held_adapters_first_then_loads(env):
    q, _ = env
    await q.admit(adm("x1", "a", adapter="X"))
    await q.admit(adm("y1", "b", adapter="Y"))
    await q.admit(adm("base", "c"))
    await q.admit(adm("y2", "b", adapter="Y"))
    # Holding Y: its two requests and the base one come before X, which it would have to load.
    assert await order(q, ["Y"], n=3) == ["y1", "base", "y2"]
    assert await order(q, ["Y"]) == ["x1"]  # nothing it holds has work: it loads X


async def test_without_room_to_load_only_servable_work_is_taken(env):
    q, _ = env
    await q.admit(adm("x1", "a", adapter="X"))
    await q.admit(adm("y1", "b", adapter="Y"))
    assert await order(q, ["Y"], can_load=False) == ["y1"]  # then nil: X waits for a replica that can load
    assert (await q.depth("m")).waiting == (0, 1, 0)
    assert await order(q, [], can_load=True) == ["x1"]


async def test_affinity_never_crosses_a_priority_band(env):
    q, _ = env
    await q.admit(adm("low-y", "b", band=2, adapter="Y"))
    await q.admit(adm("high-x", "a", band=0, adapter="X"))
    assert await order(q, ["Y"], n=1) == ["high-x"]  # band 0 first, even though X must be loaded


async def test_a_request_past_the_aging_bound_goes_first_even_if_its_adapter_must_be_loaded(env):
    q, clock = env
    await q.admit(adm("x-old", "a", adapter="X"))
    clock.t += 31  # past aging_s=30
    await q.admit(adm("y-new", "b", adapter="Y"))
    await q.admit(adm("y-new2", "b", adapter="Y"))
    # Fair share picks tenant a (b's counter was lifted to a's); x-old has waited past the bound.
    assert (await order(q, ["Y"], n=1)) == ["x-old"]


async def test_a_replica_without_adapters_keeps_plain_fifo_fair_share(env):
    q, _ = env
    await q.admit(adm("x1", "a", adapter="X"))
    await q.admit(adm("b1", "b"))
    lease = await q.pull("m", "rep")  # no affinity given: the fair-share head, whatever its adapter
    assert lease.request_id == "x1"


async def test_adapter_usage_is_recorded_under_model_colon_adapter(env):
    q, _ = env
    await q.admit(adm("x1", "a", adapter="X@abc"))
    await q.admit(adm("p1", "a"))
    for _ in range(2):
        lease = await q.pull("m", "rep", adapters=Affinity(("X@abc",), True))
        await q.complete("m", lease.request_id, "rep", output_tokens=3, cost_nusd=50, finish_reason="stop")
    usage = {k.decode(): int(v) for k, v in (await q.r.hgetall(q.keys.usage("a", "2026-11"))).items()}
    assert usage["m:X:requests"] == 1 and usage["m:X:output_tokens"] == 3
    assert usage["m:requests"] == 1 and usage["cost_nusd"] == 100


async def test_the_autoscaling_signal_counts_distinct_adapters_of_waiting_online_requests(env, redis_server):
    from autoscaling.signals import queue_depth
    from ossfleet.redisdb import connect

    q, _ = env
    for rid, adapter, band in (("1", "X", 0), ("2", "X", 1), ("3", "Y", 1), ("4", "", 1), ("5", "Z", 2)):
        await q.admit(adm(rid, adapter=adapter, band=band))
    client = connect(redis_server.url)
    try:
        ns = q.keys.namespace
        assert queue_depth(client, ns, "m", 3, adapters=True).adapters_waiting == 2  # X and Y; Z is batch-band
        assert queue_depth(client, ns, "m", 3).adapters_waiting == 0  # not counted unless asked
    finally:
        client.close()
