"""Noisy neighbour: tenant B's small chats alone, then while tenant A floods the gateway with 1 MB requests.

Side by side in one run, on a local Ray (2 CPUs, one logical GPU), the
embedded Redis and the stub engine (so the engine's cost is out of it):

- B alone: sequential small chat requests over HTTP; their latency;
- B again while A keeps large requests in flight on both APIs (HTTP and gRPC),
  each about 1 MB of text that the gateway must parse and tokenize.

- poison: tenant A sends one poisoned request (a vanishing temperature or top_p, what the round-3
  probe sent) every 3 s to a model on ossfleet's own engine while B chats with it.

The last line printed is one JSON object with ``noisy_neighbour.b_p50_alone_ms``,
``noisy_neighbour.b_p50_flooded_ms``, ``noisy_neighbour.ratio`` (goal <= 2) and
``poison.b_success_ratio`` (goal 1.0).

    python bench/isolation.py --quick
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # bench/autoscaling.py must not shadow the autoscaling package

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def b_latencies(url: str, key: str, n: int) -> list[float]:
    import aiohttp

    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}
    lat = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t = time.perf_counter()
            async with s.post(url, json=body, headers={"authorization": f"Bearer {key}"}) as r:
                await r.read()
                assert r.status == 200, r.status
            lat.append(time.perf_counter() - t)
    return lat


def flood(
    base: str, grpc_target: str, key: str, stop: threading.Event, counts: dict[str, int]
) -> list[threading.Thread]:
    """A's load: 4 HTTP and 2 gRPC clients, each sending ~1 MB requests back to back until ``stop``."""
    import httpx

    from ossfleet.client import OssfleetClient

    text = ("lorem ipsum dolor sit amet " * 40_000)[:1_000_000]
    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": text}], "max_tokens": 16}

    def http_client() -> None:
        with httpx.Client(timeout=120) as c:
            while not stop.is_set():
                r = c.post(base + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
                counts[f"http_{r.status_code}"] = counts.get(f"http_{r.status_code}", 0) + 1

    def grpc_client() -> None:
        import grpc

        with OssfleetClient(grpc_target, key) as c:
            while not stop.is_set():
                try:
                    c.generate("gpt-oss-20b", [("user", text)], max_tokens=16, timeout=120)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                counts[f"grpc_{code}"] = counts.get(f"grpc_{code}", 0) + 1

    threads = [threading.Thread(target=http_client, daemon=True) for _ in range(4)]
    threads += [threading.Thread(target=grpc_client, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    return threads


POISONS = [  # what the round-3 probe sent: each failed the engine step of every request on the replica
    {"temperature": 1e-300},
    {"temperature": 1e-300, "top_p": 1e-300},
    {"temperature": 1.0, "top_p": 1e-300},
]


def poison(base: str, keys: dict[str, str], seconds: float) -> dict[str, Any]:
    """Tenant A sends one poisoned request every 3 s to the model on ossfleet's engine while tenant B
    chats with it one request at a time; B's success ratio (goal 1.0) and what A's requests got."""
    import httpx

    url = base + "/v1/chat/completions"
    stop = threading.Event()
    a_codes: dict[str, int] = {}

    def attacker() -> None:
        with httpx.Client(timeout=120) as c:
            i = 0
            while not stop.is_set():
                body = {"model": "engine-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 32,
                        **POISONS[i % len(POISONS)]}  # fmt: skip
                r = c.post(url, json=body, headers={"authorization": f"Bearer {keys['a']}"})
                a_codes[str(r.status_code)] = a_codes.get(str(r.status_code), 0) + 1
                i += 1
                stop.wait(3.0)

    th = threading.Thread(target=attacker, daemon=True)
    th.start()
    ok = failed = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=120) as c:
        while time.monotonic() < deadline:
            body = {"model": "engine-model", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}
            r = c.post(url, json=body, headers={"authorization": f"Bearer {keys['b']}"})
            if r.status_code == 200:
                ok += 1
            else:
                failed += 1
    stop.set()
    th.join(timeout=120)
    return {"b_ok": ok, "b_failed": failed, "b_success_ratio": round(ok / max(1, ok + failed), 4),
            "a_status_codes": a_codes, "seconds": seconds}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 30 if args.quick else 100

    import ray
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.config import parse_config
    from ossfleet.control.apikeys import new_api_key, register_key
    from ossfleet.redisdb import EmbeddedRedis, connect
    from ossfleet.serveconfig import ray_env, serve_start_options
    from ossfleet.tinymodel import make_tiny_checkpoint

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d, EmbeddedRedis(Path(d) / "redis") as redis_server:
        ckpt = make_tiny_checkpoint(Path(d) / "tiny")
        port, grpc_port = free_port(), free_port()
        unlimited = {"limits": {"rpm": 10**7, "tpm": 10**12}, "budget": {"limit_usd": 10**6}}
        cfg = parse_config({
            "endpoints": {"http_port": port, "grpc_port": grpc_port},
            "limits": {"max_request_bytes": 2_000_000},
            "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(ckpt), "engine": "stub",
                        "max_batch_size": 256, "max_context": 1_000_000, "num_gpus": 1, "num_cpus": 0.25},
                       # The poison case's target: ossfleet's own engine, where sampling runs.
                       {"name": "engine-model", "spec": "gpt-oss-20b", "path": str(ckpt), "engine": "batched",
                        "max_batch_size": 8, "max_context": 1024, "num_gpus": 0, "num_cpus": 0.25,
                        "torch_threads": 1}],
            "tenants": [{"name": "a", **unlimited}, {"name": "b", **unlimited}],
        }, "<bench>")  # fmt: skip
        keys = {t: new_api_key() for t in ("a", "b")}
        r = connect(redis_server.url)
        for name, k in keys.items():
            register_key(r, cfg.redis.namespace, name, k)
        os.environ["RAY_SERVE_ENABLE_ACCESS_LOG"] = "0"
        os.environ.update(ray_env(cfg))  # the ingress ossfleet ships (endpoints.ingress), read when Ray starts
        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
        try:
            serve.start(**serve_start_options(cfg, local=True, host="127.0.0.1"))
            assert deploy(build_applications(cfg, redis_server.url), timeout_s=120)
            base = f"http://127.0.0.1:{port}"
            url = base + "/v1/chat/completions"
            asyncio.run(b_latencies(url, keys["b"], 10))  # warm-up
            alone = asyncio.run(b_latencies(url, keys["b"], n))
            stop, counts = threading.Event(), {}  # type: ignore[var-annotated]
            threads = flood(base, f"127.0.0.1:{grpc_port}", keys["a"], stop, counts)
            while sum(counts.values()) < 6:  # every flooding client has had a request through
                time.sleep(0.1)
            flooded = asyncio.run(b_latencies(url, keys["b"], n))
            stop.set()
            for th in threads:
                th.join(timeout=120)
            out["poison"] = poison(base, keys, 30.0 if args.quick else 120.0)
            print(f"poison: {out['poison']}", flush=True)
        finally:
            serve.shutdown()
            ray.shutdown()

    def ms(xs: list[float]) -> float:
        return round(statistics.median(xs) * 1000, 2)

    out["a_requests"] = counts
    out["noisy_neighbour"] = {
        "b_p50_alone_ms": ms(alone),
        "b_p50_flooded_ms": ms(flooded),
        "b_p99_alone_ms": round(sorted(alone)[int(0.99 * (len(alone) - 1))] * 1000, 2),
        "b_p99_flooded_ms": round(sorted(flooded)[int(0.99 * (len(flooded) - 1))] * 1000, 2),
        "ratio": round(statistics.median(flooded) / statistics.median(alone), 2),
    }
    out["goal_ratio"] = 2.0
    out["goals"] = {"noisy_neighbour.ratio": "<= 2", "poison.b_success_ratio": "1.0"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
