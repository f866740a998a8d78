"""Comparing models on a tenant's own traffic: how closely an A/B alias splits requests by its weights.

A tenant's alias ``assistant`` splits between a tiny Llama 3.1 and a tiny Gemma 2 (1:1, and a second alias
3:1). 1,000 requests, each from an end user of its own, go through the real gateway (``GatewayCore.submit``:
the alias resolved, the prompt rendered with the chosen model's chat template, the request admitted in an
embedded Redis); the model each was admitted to is the one that serves it and that its answer names. Then
100 users send 3 requests each: every user's requests must stay on one model.

Printed last, one JSON object:

- ``ab_split_max_deviation``: the largest distance of a model's share from its weight over the 1,000
  requests (goal <= 0.03), worst over both aliases;
- ``ab_split``: each alias's shares;
- ``ab_sticky_users``: the fraction of users whose requests all went to one model (must be 1.0);
- ``shadow.primary_ttft_p99_ratio``: the primary's time to first token at p99 with 50% of its requests
  shadowed over the same without shadows (goal <= 1.2), one run each. The primary (Llama) and the shadow
  (Gemma) each have a replica worker in this process on ossfleet's stub engine, which spends no CPU while it
  "computes" (``token_delay_s`` per step), as a GPU replica leaves the host's CPU free: the ratio is then
  what the platform adds (the shadow's admission, its relay, the pair stored, Redis shared). The same
  arrivals (open loop, seeded) are replayed in both runs. ``shadow.real_engines_cpu`` repeats it with
  ossfleet's real engine on the tiny checkpoints: on this CPU machine the two engines share its cores, so
  that ratio also counts the shadow's computation taking the primary's CPU (on GPUs, replicas do not share).

    python bench/compare.py --quick
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
import tempfile
import time
from pathlib import Path
from typing import Any

ALIASES = {
    "assistant": {"llama-3.1-8b": 1.0, "gemma-2-9b": 1.0},
    "mostly-llama": {"llama-3.1-8b": 3.0, "gemma-2-9b": 1.0},
}


def config(paths: dict[str, Path], files: Path, tenant: dict[str, Any], **options: Any) -> dict[str, Any]:
    """Tiny Llama and Gemma (with the model ``options`` given) and tenant acme, unlimited but for ``tenant``."""
    model = {"device": "cpu", "max_context": 512, "num_gpus": 1, **options}
    return {
        "limits": {"max_tokens": 64},
        "batch": {"storage_url": str(files)},
        "models": [
            {"name": "llama-3.1-8b", "spec": "llama-3.1-8b", "path": str(paths["llama"]), **model},
            {"name": "gemma-2-9b", "spec": "gemma-2-9b", "path": str(paths["gemma2"]), **model},
        ],
        "tenants": [{
            "name": "acme", "budget": {"limit_usd": 1e6},
            "limits": {"rpm": 1_000_000, "tpm": 1_000_000_000, "max_concurrent_streams": 100_000},
            **tenant,
        }],
    }  # fmt: skip


async def run(cfg: Any, redis_url: str, n: int) -> dict[str, Any]:
    from ossfleet.control.gateway import GatewayCore
    from ossfleet.harmony import Message
    from ossfleet.protocol.chat import ChatRequest

    core = GatewayCore(cfg, redis_url)
    t = cfg.tenants[0]
    messages = (Message("user", "What is the capital of France?"),)

    async def served(alias: str, user: str) -> str:
        sub = await core.submit(t, ChatRequest(model=alias, messages=messages, max_tokens=4, end_user=user))
        return sub.placement.model

    try:
        split: dict[str, dict[str, float]] = {}
        deviation = 0.0
        started = time.perf_counter()
        for alias, weights in ALIASES.items():
            counts = dict.fromkeys(weights, 0)
            for i in range(n):
                counts[await served(alias, f"{alias}-user-{i}")] += 1
            total = sum(weights.values())
            split[alias] = {m: round(c / n, 4) for m, c in counts.items()}
            deviation = max(deviation, *(abs(c / n - weights[m] / total) for m, c in counts.items()))
        elapsed = time.perf_counter() - started
        sticky = 0
        users = 100
        for u in range(users):
            sticky += len({await served("assistant", f"returning-{u}") for _ in range(3)}) == 1
    finally:
        await core.close()
    return {"split": split, "deviation": deviation, "sticky": sticky / users, "admit_s": elapsed / (n * len(ALIASES))}


async def shadow_run(cfg: Any, redis_url: str, arrivals: list[float], max_tokens: int) -> dict[str, Any]:
    """Replay ``arrivals`` (seconds from the start) of Llama requests; each one's TTFT as its caller sees it
    (submit to the first token), p50 and p99; how many shadows ran and how many pairs were stored."""
    from transformers import AutoTokenizer

    from ossfleet.chatformat import ChatFormat
    from ossfleet.control.comparison import sampled
    from ossfleet.control.gateway import GatewayCore
    from ossfleet.engine.factory import build_engine
    from ossfleet.harmony import Message
    from ossfleet.protocol.chat import ChatRequest
    from ossfleet.redisdb import connect_async
    from ossfleet.replica.worker import ReplicaWorker

    core = GatewayCore(cfg, redis_url)
    workers, engines = [], []
    for m in cfg.models:
        path = cfg.model_path(m)
        tok = AutoTokenizer.from_pretrained(path)
        engine = await build_engine(cfg, m, tok)
        w = ReplicaWorker(core.queue, engine, tok, model=m.name, owner=f"{m.name}-0", price=m.price,
                          bell_client=connect_async(redis_url), fmt=ChatFormat.of(tok, path))  # fmt: skip
        w.start()
        workers.append(w)
        engines.append(engine)
    t = cfg.tenants[0]
    ttfts: list[float] = []
    shadow = t.shadows.get("llama-3.1-8b")
    expected = 0  # shadows sent (the requests sampled)

    async def one(i: int) -> None:
        req = ChatRequest(model="llama-3.1-8b", messages=(Message("user", f"Question {i}: what is the capital of "
                          "France?"),), max_tokens=max_tokens, temperature=0, ignore_eos=True)  # fmt: skip
        started = time.perf_counter()
        sub = await core.submit(t, req)
        nonlocal expected
        expected += shadow is not None and sampled(sub.request_id, shadow.fraction)
        first = True
        async for ev in core.relay.events(sub.model_name, sub.request_id, labels=(t.name, sub.model_name)):
            if ev.type == "delta" and first:  # the first token; then read on to the end, as a client would
                ttfts.append(time.perf_counter() - started)
                first = False

    try:
        await one(-1)  # warm: the first request builds what later ones reuse
        ttfts.clear()
        start = time.perf_counter()
        tasks = []
        for i, at in enumerate(arrivals):
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        await core.settle()  # the shadows end after their primaries: every one ended and counted
        summary = await core.comparisons.read(t.name, 1, 0)
    finally:
        for w in workers:
            await w.drain(1.0)
        for e in engines:
            await e.stop()
        await core.close()
    ttfts.sort()
    roles = {(m["model"], m["role"]): m["requests"] for m in summary["models"]}
    return {
        "requests": len(ttfts),
        "ttft_p50_s": ttfts[len(ttfts) // 2],
        "ttft_p99_s": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
        "shadows_sent": expected,
        "shadows_served": roles.get(("gemma-2-9b", "shadow"), 0),
    }


def arrivals(n: int, rate: float, seed: int = 7) -> list[float]:
    import random

    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(t)
    return out


def shadow_pair(paths: dict[str, Path], files: Path, redis_url: str, engine: str, n: int, rate: float,
                max_tokens: int) -> dict[str, Any]:  # fmt: skip
    """The same arrivals without shadows, then with 50% shadowed (each in a namespace of its own)."""
    from ossfleet.config import parse_config

    got = {}
    for label, fraction in (("without", None), ("with_50pct", 0.5)):
        shadows = {} if fraction is None else {"llama-3.1-8b": {"model": "gemma-2-9b", "fraction": fraction}}
        raw = config(paths, files, {"shadows": shadows}, engine=engine, max_batch_size=8, torch_threads=1,
                     stub_token_delay_s=0.02, dtype="float32")  # fmt: skip
        raw["redis"] = {"namespace": f"bench-shadow-{engine}-{label}"}
        cfg = parse_config(raw, "<bench>")
        got[label] = asyncio.run(shadow_run(cfg, redis_url, arrivals(n, rate), max_tokens))
        print(f"{engine} engines, {label} shadows: {got[label]}", flush=True)
    ratio = got["with_50pct"]["ttft_p99_s"] / got["without"]["ttft_p99_s"]
    return {
        "primary_ttft_p99_ratio": round(ratio, 3),
        "requests": n,
        "rate_per_s": rate,
        "max_tokens": max_tokens,
        **{k: {m: round(v, 4) if isinstance(v, float) else v for m, v in r.items()} for k, r in got.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the 1,000 requests per alias the issue asks for")
    ap.parse_args()
    from ossfleet.config import parse_config
    from ossfleet.redisdb import EmbeddedRedis
    from ossfleet.tinyfamilies import FamilyShape, make_tiny_family_checkpoint

    n = 1000
    with tempfile.TemporaryDirectory() as d:
        paths = {f: make_tiny_family_checkpoint(Path(d) / f, FamilyShape(f)) for f in ("llama", "gemma2")}
        aliases = {name: {"models": w} for name, w in ALIASES.items()}
        cfg = parse_config(config(paths, Path(d) / "files", {"aliases": aliases}), "<bench>")
        with EmbeddedRedis(Path(d) / "redis") as redis:
            got = asyncio.run(run(cfg, redis.url, n))
            for alias, shares in got["split"].items():
                print(f"{alias}: {shares} (weights {ALIASES[alias]}) over {n} users", flush=True)
            print(f"returning users on one model: {got['sticky']:.0%}; admission {got['admit_s'] * 1e3:.1f} ms/request")
            stub = shadow_pair(paths, Path(d) / "files", redis.url, "stub", 300, 20.0, 16)
            real = shadow_pair(paths, Path(d) / "files", redis.url, "batched", 100, 4.0, 16)
    print(json.dumps({
        "requests_per_alias": n,
        "ab_split_max_deviation": round(got["deviation"], 4),
        "ab_split": got["split"],
        "ab_sticky_users": got["sticky"],
        "shadow": {**stub, "engine": "stub (20 ms a step, no CPU)", "real_engines_cpu": real},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
