"""Load: 1,000 concurrent streams from 10 tenants against the stub engine for 60 s.

No error, no lost request (every stream that started ends with its finish
reason), budgets exact to the nano-dollar, and the serving processes' memory
flat (measured after a warm-up and at the end).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import httpx
import pytest

from ossfleet.config import parse_config
from ossfleet.control.apikeys import new_api_key, register_key
from ossfleet.control.budget import period_id
from ossfleet.control.keyspace import KeySpace
from ossfleet.control.pricing import cost_nusd
from ossfleet.redisdb import connect

pytestmark = pytest.mark.slow

TENANTS = 10
PER_TENANT = 100
DURATION_S = 60.0


def rss_mib(pattern: str) -> float:
    """Resident memory of the processes whose command line matches ``pattern``."""
    pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


async def one_stream(client: httpx.AsyncClient, url: str, key: str) -> dict:
    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "load"}], "max_tokens": 32,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    finish, usage = None, None
    async with client.stream("POST", url, json=body, headers={"authorization": f"Bearer {key}"}) as r:
        if r.status_code != 200:
            return {"error": f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"}
        done = False
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return {"error": chunk["error"]["message"]}
            for c in chunk.get("choices", []):
                finish = c.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
    if not done or finish is None or usage is None:
        return {"error": f"stream ended early (done={done}, finish={finish})"}
    return {"finish": finish, "usage": usage}


async def load(url: str, keys: dict[str, str], patterns: dict[str, str]) -> tuple[dict[str, list[dict]], list[dict]]:
    """Every tenant's streams, and the serving processes' memory sampled every 5 s meanwhile."""
    results: dict[str, list[dict]] = {t: [] for t in keys}
    samples: list[dict] = []
    limits = httpx.Limits(max_connections=TENANTS * PER_TENANT + 16, max_keepalive_connections=TENANTS * PER_TENANT)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120, connect=30)) as client:
        end = time.monotonic() + DURATION_S

        async def worker(tenant: str) -> None:
            while time.monotonic() < end:
                try:
                    results[tenant].append(await one_stream(client, url, keys[tenant]))
                except Exception as e:
                    results[tenant].append({"error": f"{type(e).__name__}: {e}"})

        async def sample() -> None:
            start = time.monotonic()
            while time.monotonic() < end + 30:
                mem = await asyncio.to_thread(lambda: {k: rss_mib(p) for k, p in patterns.items()})
                samples.append({"t": round(time.monotonic() - start), **mem})
                await asyncio.sleep(5)

        began = time.monotonic()
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(worker(t) for t in keys for _ in range(PER_TENANT)))
        sampler.cancel()
    samples.append({"t": round(time.monotonic() - began), **{k: rss_mib(p) for k, p in patterns.items()}})
    return results, samples


def test_a_thousand_concurrent_streams_for_a_minute(ray_local, tiny_checkpoint, redis_server, free_port):
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.serveconfig import serve_start_options

    port = free_port()
    tenants = [{"name": f"t{i}", "budget": {"limit_usd": 1000},
                "limits": {"rpm": 100_000, "tpm": 100_000_000, "max_concurrent_streams": 2 * PER_TENANT}}
               for i in range(TENANTS)]  # fmt: skip
    cfg = parse_config(
        {
            "redis": {"namespace": "load"},
            "endpoints": {"http_port": port, "grpc_port": free_port(), "gateway_max_ongoing_requests": 2048},
            # Two stub replicas of 512 slots; 0.5 s a token, 16 tokens a chunk: a stream lasts about 16 s.
            "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(tiny_checkpoint), "engine": "stub",
                        "stub_token_delay_s": 0.5, "max_batch_size": 512, "num_gpus": 1, "num_cpus": 0.25,
                        "replicas": {"min": 2, "max": 2},
                        "price": {"input_per_1k": 0.001, "output_per_1k": 0.002}}],
            "tenants": tenants,
        },
        "<load>",
    )  # fmt: skip
    serve.start(**serve_start_options(cfg, local=True, host="127.0.0.1"))
    assert deploy(build_applications(cfg, redis_server.url), timeout_s=180)
    r = connect(redis_server.url)
    keys = {}
    for t in cfg.tenants:
        keys[t.name] = new_api_key()
        register_key(r, "load", t.name, keys[t.name])
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    patterns = {"gateway": "ServeReplica:gateway", "replicas": "ServeReplica:model-", "proxy": "ProxyActor"}
    warm = asyncio.run(_warm_up(url, keys))
    t0 = time.monotonic()
    results, samples = asyncio.run(load(url, keys, patterns))
    elapsed = time.monotonic() - t0

    errors = [x["error"] for rs in results.values() for x in rs if "error" in x]
    total = sum(len(rs) for rs in results.values())
    print(json.dumps({"streams": total, "seconds": round(elapsed, 1), "errors": len(errors), "rss_mib": samples}))
    assert errors == [], errors[:5]
    assert total >= TENANTS * PER_TENANT * 2  # each of the 1,000 clients ran streams back to back
    price = cfg.models[0].price
    period = period_id("monthly")
    for tenant, rs in results.items():
        usage = {k.decode(): int(v) for k, v in r.hgetall(KeySpace("load").usage(tenant, period)).items()}
        budget = {k.decode(): int(v) for k, v in r.hgetall(KeySpace("load").budget(tenant, period)).items()}
        done = [*rs, warm[tenant]]
        # No request lost or settled twice: Redis counted exactly the streams that ended.
        assert usage["gpt-oss-20b:requests"] == len(done), tenant
        # Budgets exact: what was spent is the sum of each stream's own cost, to the nano-dollar.
        expected = sum(cost_nusd(price, x["usage"]["prompt_tokens"], x["usage"]["completion_tokens"]) for x in done)
        assert budget["spent"] == expected, tenant
        assert budget["reserved"] == 0, tenant
        assert budget["spent"] == usage["cost_nusd"], tenant
        assert r.zcard(KeySpace("load").inflight(tenant)) == 0
    # Flat: once 1,000 streams are open (20 s in), memory holds while thousands more start and end.
    at_load = next(x for x in samples if x["t"] >= 20)
    for k in patterns:
        assert samples[-1][k] <= at_load[k] * 1.1 + 32, (k, at_load, samples[-1])


async def _warm_up(url: str, keys: dict[str, str]) -> dict[str, dict]:
    """One stream per tenant before memory is first measured."""
    async with httpx.AsyncClient(timeout=120) as client:
        res = await asyncio.gather(*(one_stream(client, url, key) for key in keys.values()))
    out = dict(zip(keys, res, strict=True))
    assert all("error" not in x for x in out.values()), out
    return out
