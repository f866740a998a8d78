"""Queue state sharded over a real Redis Cluster (three primaries): each model's queue in a slot of its own,
each tenant's money in another; admission and settlement stay exact across slots, and the reconciler
finishes what a crash between two steps left."""

from __future__ import annotations

import asyncio
import json

import pytest

from ossfleet.control.admission import Admission
from ossfleet.control.queue import RequestQueue
from ossfleet.errors import BudgetExhausted, LeaseLost, QueueFull
from ossfleet.protocol.work import WorkItem
from ossfleet.redisdb import connect

MODELS = ("m0", "m1", "m2")


def adm(rid: str, model: str = "m0", tenant: str = "a", reserve: int = 100, limit: int = 10**12, **kw) -> Admission:
    return Admission(
        rid, tenant, model, 1, WorkItem([1, 2, 3], 20), 10, 20, reserve, limit, "2026-11", 10**6, 10**9, **kw
    )


async def money(q: RequestQueue, tenant: str = "a") -> dict[str, int]:
    raw = await q.r.hgetall(q.keys.budget(tenant, "2026-11"))
    return {k.decode(): int(v) for k, v in raw.items()}


def test_cluster_spreads_models_and_tenants_over_the_shards(redis_cluster):
    # The slots of three models and two tenants do not all land on one primary.
    r = connect(redis_cluster.url)
    try:
        from ossfleet.control.keyspace import KeySpace

        ks = KeySpace("ossfleet")
        slots = [r.keyslot(ks.model_slot(m)) for m in MODELS] + [r.keyslot(ks.tenant_slot(t)) for t in ("a", "b")]
        nodes = {r.get_node_from_key(ks.model_slot(m)).name for m in MODELS}
        assert len(set(slots)) == len(slots)
        assert len(nodes) >= 2
    finally:
        r.close()


async def test_cluster_budget_race_never_overspends_and_the_ledger_is_exact(cenv):
    q, _ = cenv

    async def one(i: int) -> str | None:
        try:
            return (await q.admit(adm(f"c{i}", model=MODELS[i % 3], limit=5000))).request_id
        except BudgetExhausted:
            return None

    admitted = [rid for rid in await asyncio.gather(*[one(i) for i in range(200)]) if rid]
    assert len(admitted) == 50  # a budget for 50, reserved in the tenant's slot whatever the model
    assert await money(q) == {"reserved": 5000}
    per_model = [sum(1 for rid in admitted if int(rid[1:]) % 3 == i) for i in range(3)]
    assert [sum((await q.depth(m)).waiting) for m in MODELS] == per_model
    served = 0
    for m in MODELS:
        while (lease := await q.pull(m, "rep")) is not None:
            assert await q.complete(m, lease.request_id, "rep", 1, 60, "stop")
            served += 1
    assert served == 50
    assert await money(q) == {"reserved": 0, "spent": 50 * 60}
    usage = {k.decode(): int(v) for k, v in (await q.r.hgetall(q.keys.usage("a", "2026-11"))).items()}
    assert sum(v for k, v in usage.items() if k.endswith(":requests")) == 50 and usage["cost_nusd"] == 3000
    assert await q.r.zcard(q.keys.inflight("a")) == 0
    assert [await q.r.zcard(q.keys.owed(m)) for m in MODELS] == [0, 0, 0]  # every settlement made, none owed


async def test_cluster_expired_lease_requeues_at_the_head_and_completes_once(cenv):
    q, clock = cenv
    await q.admit(adm("first", model="m1"))
    await q.admit(adm("second", model="m1"))
    lease = await q.pull("m1", "dead-replica")
    assert lease.request_id == "first"
    clock.t += 11  # the replica died: its lease runs out
    assert await q.reap("m1") == (1, 0, 0)
    again = await q.pull("m1", "live-replica")
    assert again.request_id == "first" and again.attempt == 2
    with pytest.raises(LeaseLost):  # the zombie's late ack is refused
        await q.complete("m1", "first", "dead-replica", 5, 100, "stop")
    assert await q.complete("m1", "first", "live-replica", 5, 100, "stop")
    assert not await q.complete("m1", "first", "live-replica", 5, 100, "stop")
    assert await money(q) == {"reserved": 100, "spent": 100}  # "second" still holds its reservation


async def test_cluster_leases_expiring_past_max_attempts_dead_letter_and_refund(cenv):
    q, clock = cenv
    await q.admit(adm("doomed", model="m2", reserve=700))
    for _ in range(3):
        assert (await q.pull("m2", "dying")).request_id == "doomed"
        clock.t += 11
        await q.reap("m2")
    assert (await q.request_state("m2", "doomed"))["state"] == "dead"
    assert await money(q) == {"reserved": 0}  # refunded in the tenant's slot
    assert (await q.read_stream("m2", "doomed"))[-1].type == "error"


async def test_cluster_queue_full_undoes_the_reservation(cenv):
    q, _ = cenv
    q.max_queue = 1
    await q.admit(adm("kept", idempotency_key="k1"))
    with pytest.raises(QueueFull):
        await q.admit(adm("refused", idempotency_key="k2"))
    assert await money(q) == {"reserved": 100}
    assert await q.r.zrange(q.keys.inflight("a"), 0, -1) == [b"kept"]
    assert await q.r.exists(q.keys.resv("a", "refused"), q.keys.idem("a", "k2")) == 0
    q.max_queue = 10
    assert (await q.admit(adm("again", idempotency_key="k2"))).request_id == "again"  # the key is free again


def _opts(q: RequestQueue, rid: str, model: str = "m0") -> str:
    return json.dumps({
        "tenant": "a", "model": model, "band": 1, "now_ms": q._now(), "idem": "", "max_queue": 100,
        "budget_limit_nusd": 10**12, "period": "2026-11", "rpm": 10**6, "tpm": 10**9, "nbands": 3, "weight": "1.0",
        "alert_at_nusd": 0, "max_inflight": 0, "inflight_ttl_ms": 10**6, "track_inflight": True, "count_rate": True,
        "adapter": "", "usage_name": "", "group": [{"id": rid, "in_tokens": 10, "max_tokens": 20, "reserve_nusd": 100}],
    })  # fmt: skip


async def test_cluster_reconciler_gives_back_a_reservation_whose_gateway_died_before_enqueue(cenv):
    q, clock = cenv
    # A gateway reserved in the tenant's slot and died before enqueueing in the model's slot.
    assert (await q._run("reserve", q.keys.tenant_slot("a"), _opts(q, "orphan")))[0] == b"OK"
    await q.admit(adm("live", model="m1"))  # a healthy admission beside it
    assert await money(q) == {"reserved": 200}
    assert await q.reconcile(MODELS, ["a"], grace_s=10) == {"aborted": 0, "confirmed": 0, "settled": 0}
    clock.t += 11  # past the grace period
    assert await q.reconcile(MODELS, ["a"], grace_s=10) == {"aborted": 1, "confirmed": 1, "settled": 0}
    assert await money(q) == {"reserved": 100}
    assert await q.r.zrange(q.keys.inflight("a"), 0, -1) == [b"live"]
    # The dead gateway's enqueue, arriving late, is refused: the reservation is gone.
    late = await q._run("enqueue", q.keys.model_slot("m0"), _opts(q, "orphan"), json.dumps({"prompt": [1]}))
    assert late[0] == b"ABORTED"
    assert (await q.depth("m0")).waiting == (0, 0, 0)
    assert await q.reconcile(MODELS, ["a"], grace_s=10) == {"aborted": 0, "confirmed": 0, "settled": 0}


async def test_cluster_reconciler_settles_once_what_a_replica_died_before_settling(cenv):
    q, clock = cenv
    await q.admit(adm("r1", model="m2", reserve=500))
    lease = await q.pull("m2", "rep")
    # The replica's complete ran in the model's slot; it died before the tenant's settle.
    opts = {"model": "m2", "id": lease.request_id, "owner": "rep", "out_tokens": 7, "cost_nusd": 321,
            "now_ms": q._now(), "w_out": 2.0, "nbands": 3, "stream_ttl_s": 60, "finish_reason": "stop"}  # fmt: skip
    reply = await q._run("complete", q.keys.model_slot("m2"), json.dumps(opts))
    assert reply[0] == b"OK" and reply[1] == b"-1"
    assert await money(q) == {"reserved": 500}
    assert await q.r.zcard(q.keys.owed("m2")) == 1
    assert await q.r.ttl(q.keys.req("m2", "r1")) == -1  # kept, however long the settlement waits
    clock.t += 11
    assert (await q.reconcile(MODELS, ["a"], grace_s=10))["settled"] == 1
    assert await money(q) == {"reserved": 0, "spent": 321}
    assert await q.r.zcard(q.keys.owed("m2")) == 0
    assert 0 < await q.r.ttl(q.keys.req("m2", "r1")) <= 3600  # settled: it expires with its stream
    # Settling again (a second reconciler, a retried call) charges nothing more.
    await q._settle("m2", [("r1", "a", "charge", 321, 7)])
    assert await money(q) == {"reserved": 0, "spent": 321}
    usage = {k.decode(): int(v) for k, v in (await q.r.hgetall(q.keys.usage("a", "2026-11"))).items()}
    assert usage == {"m2:requests": 1, "m2:input_tokens": 10, "m2:output_tokens": 7, "cost_nusd": 321}


async def test_cluster_cancel_finds_the_model_by_the_tenants_reservation(cenv):
    q, _ = cenv
    await q.admit(adm("waiting", model="m1", reserve=300))
    assert await q.cancel("waiting", "a") == "cancelled"
    assert await money(q) == {"reserved": 0}
    assert await q.cancel("waiting", "a") == "finished"
    with pytest.raises(Exception, match="no request"):
        await q.cancel("waiting", "b")  # another tenant's request is not found


async def test_cluster_soft_alert_reaches_the_alerts_stream_once(cenv):
    q, _ = cenv
    for i in range(3):
        await q.admit(adm(f"s{i}", model=MODELS[i], reserve=100, alert_at_nusd=150))
        lease = await q.pull(MODELS[i], "rep")
        await q.complete(MODELS[i], lease.request_id, "rep", 1, 100, "stop")
    alerts = await q.alerts()
    assert [a.fields["tenant"] for a in alerts] == ["a"] and alerts[0].fields["spent_nusd"] == "200"


async def test_hardening_the_serve_autoscaling_policy_reads_a_redis_cluster(cenv, redis_cluster, namespace):
    """#33 finding 12: the policy built its client with redis.Redis.from_url, which raises on
    redis+cluster://; the error was caught, so on a cluster it kept the replica count forever."""
    from types import SimpleNamespace

    from autoscaling.serve_policy import OssfleetServePolicy

    q, _ = cenv
    for i in range(5):
        await q.admit(adm(f"w{i}", model="m2"))
    policy = OssfleetServePolicy(redis_cluster.url, namespace, "m2", 3, min_replicas=0, max_replicas=4)
    ctx = SimpleNamespace(current_time=None, target_num_replicas=0, policy_state={}, aggregated_metrics={})
    desired, _ = policy(ctx)
    assert desired >= 1  # five requests wait and nothing serves them: the policy asks for a replica
