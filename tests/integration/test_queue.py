"""The queue scripts against a real embedded Redis: lifecycles, money, leases, fairness."""

from __future__ import annotations

import asyncio

import pytest

from ossfleet.control.admission import Admission, GroupMember
from ossfleet.control.queue import Renewal
from ossfleet.errors import BudgetExhausted, LeaseLost, NotFound, QueueFull, RateLimited
from ossfleet.protocol.load import ReplicaLoad
from ossfleet.protocol.work import WorkItem

_n = 0


def adm(tenant="a", band=1, rid=None, reserve=1000, limit=10**12, rpm=10**6, tpm=10**9, **kw) -> Admission:
    global _n
    _n += 1
    return Admission(
        request_id=rid or f"r{_n}",
        tenant=tenant,
        model="m",
        band=band,
        item=WorkItem([1, 2, 3], 20),
        input_tokens=10,
        max_tokens=20,
        reserve_nusd=reserve,
        budget_limit_nusd=limit,
        period="2026-11",
        rpm=rpm,
        tpm=tpm,
        **kw,
    )


async def budget(q, tenant="a"):
    raw = await q.r.hgetall(q.keys.budget(tenant, "2026-11"))
    return {k.decode(): int(v) for k, v in raw.items()}


async def test_lifecycle_settles_the_actual_cost_and_ends_the_stream(env):
    q, _ = env
    await q.admit(adm(rid="x", reserve=1000))
    assert (await q.depth("m")).waiting == (0, 1, 0)
    lease = await q.pull("m", "rep")
    assert lease.request_id == "x" and lease.attempt == 1 and lease.item == WorkItem([1, 2, 3], 20)
    await q.emit("m", "x", [{"type": "delta", "seq": "0", "kind": "content", "text": "hi"}])
    assert await q.complete("m", "x", "rep", output_tokens=5, cost_nusd=400, finish_reason="stop")
    assert await budget(q) == {"reserved": 0, "spent": 400}
    events = await q.read_stream("m", "x")
    assert [e.type for e in events] == ["delta", "done"]
    assert events[-1].fields["output_tokens"] == "5"
    assert not await q.complete("m", "x", "rep", 5, 400, "stop")  # a second ack charges nothing
    assert (await budget(q))["spent"] == 400


async def test_concurrent_admits_never_reserve_beyond_the_budget(env):
    q, _ = env

    async def one(i):
        try:
            await q.admit(adm(rid=f"c{i}", reserve=100, limit=5000))
            return True
        except BudgetExhausted:
            return False

    results = await asyncio.gather(*[one(i) for i in range(200)])
    assert sum(results) == 50
    assert await budget(q) == {"reserved": 5000}
    # Serve them all, each cheaper than reserved: spent + reserved always sums exactly.
    while (lease := await q.pull("m", "rep")) is not None:
        await q.complete("m", lease.request_id, "rep", 1, 60, "stop")
    assert await budget(q) == {"reserved": 0, "spent": 50 * 60}


async def test_budget_rejection_names_what_is_left_and_changes_nothing(env):
    q, _ = env
    await q.admit(adm(reserve=700, limit=1000))
    with pytest.raises(BudgetExhausted, match=r"\$0\.0000003 of budget left") as e:
        await q.admit(adm(reserve=700, limit=1000))
    assert e.value.details["budget_left_usd"] == pytest.approx(3e-7)
    assert (await q.depth("m")).waiting == (0, 1, 0)
    assert await budget(q) == {"reserved": 700}


async def test_rate_limit_gives_retry_after_and_changes_nothing(env):
    q, clock = env
    for _ in range(3):
        await q.admit(adm(rpm=3))
    with pytest.raises(RateLimited) as e:
        await q.admit(adm(rpm=3))
    assert 0 < e.value.retry_after_s <= 61
    assert (await q.depth("m")).waiting == (0, 3, 0)
    clock.t += 120  # two minutes later the window is empty again
    await q.admit(adm(rpm=3))


async def test_request_larger_than_tpm_is_refused_for_good(env):
    q, _ = env
    with pytest.raises(RateLimited, match="lower max_tokens"):
        await q.admit(adm(tpm=25))


async def test_queue_full(env):
    q, _ = env
    q.max_queue = 2
    await q.admit(adm())
    await q.admit(adm())
    with pytest.raises(QueueFull):
        await q.admit(adm())


async def test_idempotency_key_returns_the_same_request_charged_once(env):
    q, _ = env
    a = await q.admit(adm(rid="i1", idempotency_key="k1"))
    b = await q.admit(adm(rid="i2", idempotency_key="k1"))
    assert (a.request_id, a.duplicate) == ("i1", False)
    assert (b.request_id, b.duplicate) == ("i1", True)
    assert (await budget(q))["reserved"] == 1000
    assert (await q.depth("m")).waiting == (0, 1, 0)


async def test_expired_lease_requeues_at_the_head_and_completes_once(env):
    q, clock = env
    await q.admit(adm(rid="first"))
    await q.admit(adm(rid="second"))
    lease = await q.pull("m", "dead-replica")
    assert lease.request_id == "first"
    clock.t += 11  # the replica died: its lease runs out
    assert await q.reap("m") == (1, 0, 0)
    again = await q.pull("m", "live-replica")
    assert again.request_id == "first" and again.attempt == 2
    with pytest.raises(LeaseLost):  # the zombie's late ack is refused
        await q.complete("m", "first", "dead-replica", 5, 100, "stop")
    assert await q.complete("m", "first", "live-replica", 5, 100, "stop")
    assert (await budget(q))["spent"] == 100


async def test_failures_retry_with_backoff_then_dead_letter(env):
    q, clock = env
    await q.admit(adm(rid="f", reserve=500))
    for attempt in (1, 2):
        lease = await q.pull("m", "rep")
        assert lease.attempt == attempt
        assert await q.fail("m", "f", "rep", "boom") == "retry"
        assert await q.pull("m", "rep") is None  # not before its backoff
        clock.t += 2 ** (attempt - 1) + 0.01
        assert (await q.reap("m"))[1] == 1
    await q.pull("m", "rep")
    assert await q.fail("m", "f", "rep", "boom") == "dead"
    state = await q.request_state("m", "f")
    assert state["state"] == "dead" and state["error"] == "boom"
    assert await budget(q) == {"reserved": 0}
    assert (await q.read_stream("m", "f"))[-1].fields["error"] == "boom"


async def test_cancel_by_another_tenant_is_refused(env):
    q, _ = env
    await q.admit(adm(tenant="a", rid="mine"))
    with pytest.raises(NotFound):
        await q.cancel("mine", "b")
    assert (await q.request_state("m", "mine"))["state"] == "queued"
    assert await q.cancel("mine", "a") == "cancelled"
    assert await budget(q) == {"reserved": 0}
    assert await q.pull("m", "rep") is None


async def test_cancel_of_a_running_request_flags_it_for_its_replica(env):
    q, _ = env
    await q.admit(adm(rid="run"))
    await q.pull("m", "rep")
    assert await q.renew("m", "run", "rep") is Renewal.KEPT
    assert await q.cancel("run", "a") == "cancelling"
    assert await q.renew("m", "run", "rep") is Renewal.CANCEL_REQUESTED
    await q.complete("m", "run", "rep", 2, 10, "abort")
    assert (await q.read_stream("m", "run"))[-1].fields["finish_reason"] == "cancelled"


async def test_release_hands_the_request_back_without_counting_an_attempt(env):
    q, _ = env
    await q.admit(adm(rid="rel"))
    await q.pull("m", "draining")
    await q.release("m", "rel", "draining")
    lease = await q.pull("m", "other")
    assert lease.request_id == "rel" and lease.attempt == 1


async def test_higher_band_first(env):
    q, _ = env
    await q.admit(adm(rid="low", band=2))
    await q.admit(adm(rid="high", band=0))
    assert (await q.pull("m", "r")).request_id == "high"
    assert (await q.pull("m", "r")).request_id == "low"


async def test_a_light_tenant_is_served_before_a_flooding_one_drains(env):
    q, _ = env
    for i in range(1000):
        await q.admit(adm(tenant="flood", rid=f"A{i}"))
    for i in range(20):
        await q.admit(adm(tenant="light", rid=f"B{i}"))
    order = []
    while (lease := await q.pull("m", "r")) is not None:
        order.append(lease.tenant)
        await q.complete("m", lease.request_id, "r", 20, 1, "stop")
    last_light = max(i for i, t in enumerate(order) if t == "light")
    assert order.count("light") == 20 and last_light < 60
    # FIFO within a tenant.
    assert order.count("flood") == 1000


async def test_aging_bounds_the_wait_of_a_low_band_request(env):
    q, clock = env
    await q.admit(adm(rid="old-batch", band=2))
    clock.t += 20
    for i in range(50):
        await q.admit(adm(rid=f"hot{i}", band=0))
    assert (await q.pull("m", "r")).band == 0  # 20 s old: band 0 still goes first
    clock.t += 11  # the batch request has now waited past aging_s = 30
    assert (await q.pull("m", "r")).request_id == "old-batch"
    assert (await q.pull("m", "r")).band == 0


async def test_soft_budget_alert_fires_once_per_period(env):
    q, _ = env
    for i in range(3):
        await q.admit(adm(rid=f"s{i}", reserve=300, limit=1000, alert_at_nusd=800))
        lease = await q.pull("m", "rep")
        await q.complete("m", lease.request_id, "rep", 1, 300, "stop")
    alerts = await q.alerts()
    assert len(alerts) == 1
    assert alerts[0].fields["tenant"] == "a" and alerts[0].fields["spent_nusd"] == "900"


async def test_heartbeats_report_live_replicas_only(env):
    q, clock = env
    await q.heartbeat("m", "r1", ReplicaLoad(running=2, max_slots=8, requests_per_s=1.5))
    clock.t += 10
    await q.heartbeat("m", "r2", ReplicaLoad(running=0, max_slots=8, requests_per_s=0.5))
    live = await q.replicas("m", max_age_s=5)
    assert list(live) == ["r2"] and live["r2"].requests_per_s == 0.5


async def test_complete_and_pull_settles_and_leases_the_next_in_one_call(env):
    q, _ = env
    await q.admit(adm(rid="one", reserve=1000))
    await q.admit(adm(rid="two", reserve=1000))
    first = await q.pull("m", "rep")
    done, nxt = await q.complete_and_pull("m", first.request_id, "rep", 3, 100, "stop")
    assert done and nxt is not None and nxt.request_id == "two" and nxt.attempt == 1
    assert (await q.request_state("m", "two"))["state"] == "leased"
    done, nxt = await q.complete_and_pull("m", "two", "rep", 3, 100, "stop")
    assert done and nxt is None
    assert await budget(q) == {"reserved": 0, "spent": 200}


async def test_in_flight_limit_per_tenant_frees_as_requests_end(env):
    q, _ = env
    await q.admit(adm(rid="f1", max_inflight=2))
    await q.admit(adm(rid="f2", max_inflight=2))
    with pytest.raises(RateLimited, match="2 requests in flight"):
        await q.admit(adm(rid="f3", max_inflight=2))
    await q.admit(adm(tenant="other", rid="o1", max_inflight=2))  # per tenant
    lease = await q.pull("m", "rep")
    await q.complete("m", lease.request_id, "rep", 1, 1, "stop")  # one ends...
    await q.admit(adm(rid="f4", max_inflight=2))  # ...and frees a place
    await q.cancel("f4", "a")  # cancelling frees one too
    await q.admit(adm(rid="f5", max_inflight=2))


async def test_a_replica_short_of_slots_leaves_the_batch_band_waiting(env):
    q, _ = env
    await q.admit(adm(band=2, rid="batch-line"))
    assert await q.pull("m", "w1", batch_band=False) is None  # only the batch band waits: left alone
    await q.admit(adm(band=0, rid="interactive"))
    lease = await q.pull("m", "w1", batch_band=False)
    assert lease is not None and lease.request_id == "interactive"
    # complete_and_pull honours the same bound.
    done, nxt = await q.complete_and_pull("m", "interactive", "w1", 1, 10, "stop", batch_band=False)
    assert done and nxt is None
    lease = await q.pull("m", "w1", batch_band=True)
    assert lease is not None and lease.request_id == "batch-line"


async def test_batch_lines_do_not_count_as_the_tenants_streams(env):
    q, _ = env
    for i in range(3):
        await q.admit(adm(rid=f"line{i}", max_inflight=1, track_inflight=False))
    await q.admit(adm(rid="mine", max_inflight=1))  # the tenant's own stream still fits
    with pytest.raises(RateLimited):
        await q.admit(adm(rid="second", max_inflight=1))


async def test_batch_lines_neither_meet_nor_use_up_the_tenants_rate_limits(env):
    q, _ = env
    for i in range(5):  # far past rpm=2 and tpm=40 (each line is 30 tokens)
        await q.admit(adm(rid=f"line{i}", rpm=2, tpm=40, count_rate=False, track_inflight=False))
    await q.admit(adm(rid="mine", rpm=2, tpm=40))  # the tenant's own requests still have their whole minute
    with pytest.raises(RateLimited):
        await q.admit(adm(rid="second", rpm=2, tpm=40))


def group(n: int, reserve: int = 1000) -> tuple[GroupMember, ...]:
    return tuple(GroupMember(f"g{_n}-{i}", WorkItem([1, 2, 3], 20, seed=i), 10, 20, reserve) for i in range(n))


async def test_a_group_is_admitted_all_or_nothing_against_every_limit(env):
    q, _ = env
    # The budget fits one request and not three: none of the three is admitted.
    with pytest.raises(BudgetExhausted, match="or n"):
        await q.admit(adm(reserve=400, limit=1000, more=group(2, reserve=400)))
    # rpm 2, tpm 100 (30 a request), 2 streams, a queue of 2: a group of 3 breaks each, alone.
    for kw, err in (({"rpm": 2}, RateLimited), ({"tpm": 80}, RateLimited),
                    ({"max_inflight": 2}, RateLimited)):  # fmt: skip
        with pytest.raises(err):
            await q.admit(adm(more=group(2), **kw))
    q.max_queue = 2
    with pytest.raises(QueueFull):
        await q.admit(adm(more=group(2)))
    assert (await q.depth("m")).waiting == (0, 0, 0)
    assert await budget(q) == {}
    # Within the limits: every member queued, in order, each with its own payload and reservation.
    q.max_queue = 100
    more = group(2, reserve=300)
    a = await q.admit(adm(rid="lead", reserve=300, limit=1000, rpm=3, tpm=90, max_inflight=3, more=more))
    assert a.request_ids == ("lead", *(m.request_id for m in more)) and not a.duplicate
    assert (await q.depth("m")).waiting == (0, 3, 0)
    assert await budget(q) == {"reserved": 900}
    leased = [await q.pull("m", "w") for _ in range(3)]
    assert [lease.request_id for lease in leased] == list(a.request_ids)
    assert [lease.item.seed for lease in leased] == [None, 0, 1]


async def test_a_repeated_group_returns_every_id_once(env):
    q, _ = env
    a = await q.admit(adm(rid="gl", idempotency_key="grp", more=group(2)))
    b = await q.admit(adm(rid="gl2", idempotency_key="grp", more=group(2)))
    assert b.duplicate and b.request_ids == a.request_ids and len(a.request_ids) == 3
    assert (await budget(q))["reserved"] == 3000


async def test_complete_writes_the_last_output_events_before_the_end_in_one_call(env):
    q, _ = env
    await q.admit(adm(rid="t1"))
    lease = await q.pull("m", "rep")
    await q.emit("m", "t1", [{"type": "delta", "seq": "0", "kind": "content", "text": "a"}])
    last = [{"type": "delta", "seq": "1", "kind": "content", "text": "b"},
            {"type": "delta", "seq": "2", "kind": "tool_call", "text": "", "name": "f", "arguments": "{}"}]  # fmt: skip
    assert await q.complete("m", lease.request_id, "rep", 3, 10, "stop", events=last)
    events = await q.read_stream("m", "t1")
    assert [e.fields.get("seq") for e in events] == ["0", "1", "2", None]
    assert events[2].fields == {**last[1]} and events[-1].type == "done"
    # A duplicate ack (a retry's) writes nothing more.
    assert not await q.complete("m", lease.request_id, "rep", 3, 10, "stop", events=last)
    assert len(await q.read_stream("m", "t1")) == 4


async def test_a_replicas_headroom_leases_only_tenants_with_nothing_running_there(env):
    """A replica whose slots one tenant fills pulls for its headroom with that tenant excluded: another
    tenant's request starts at once, in fair-share order among the others; the excluded tenant's wait."""
    q, _ = env
    for i in range(3):
        await q.admit(adm("flood", rid=f"f{i}"))
    await q.admit(adm("quiet", rid="q0"))
    await q.admit(adm("other", rid="o0", band=0))
    assert (await q.pull("m", "rep")).request_id == "o0"  # band 0 first, as ever
    got = await q.pull("m", "rep", exclude_tenants=["flood", "other"])
    assert (got.request_id, got.tenant) == ("q0", "quiet")
    assert await q.pull("m", "rep", exclude_tenants=["flood"]) is None  # only the excluded tenant waits
    assert [(await q.pull("m", "rep")).request_id for _ in range(3)] == ["f0", "f1", "f2"]  # untouched, in order
    assert await q.pull("m", "rep") is None


async def test_hardening_a_request_the_engine_refused_ends_as_the_callers_400_not_a_500(env):
    from ossfleet.errors import InvalidRequest, RequestFailed
    from ossfleet.protocol.events import Outcome, fold

    q, _ = env
    await q.admit(adm(rid="bad", reserve=500))
    await q.pull("m", "rep")
    # Refused (an engine's EngineRefused): dead at once, no retry, its stream's error carries the status.
    assert await q.fail("m", "bad", "rep", "the prompt is empty", retryable=False, status=400) == "dead"
    last = (await q.read_stream("m", "bad"))[-1]
    assert last.fields["status"] == "400"
    with pytest.raises(InvalidRequest, match="cannot be served: the prompt is empty") as e:
        fold(Outcome(), last)
    assert e.value.http_status == 400
    # A failure that is not the request's own stays a 500.
    await q.admit(adm(rid="boom", reserve=500))
    await q.pull("m", "rep")
    assert await q.fail("m", "boom", "rep", "engine died", retryable=False) == "dead"
    last = (await q.read_stream("m", "boom"))[-1]
    assert "status" not in last.fields
    with pytest.raises(RequestFailed):
        fold(Outcome(), last)
