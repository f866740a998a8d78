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
- ``shadow``: shadow traffic is not built yet (#30); its ``primary_ttft_p99_ratio`` is null.

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


def config(paths: dict[str, Path], files: Path) -> dict[str, Any]:
    model = {"device": "cpu", "max_context": 512, "num_gpus": 1}
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
            "aliases": {name: {"models": w} for name, w in ALIASES.items()},
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
        cfg = parse_config(config(paths, Path(d) / "files"), "<bench>")
        with EmbeddedRedis(Path(d) / "redis") as redis:
            got = asyncio.run(run(cfg, redis.url, n))
    for alias, shares in got["split"].items():
        print(f"{alias}: {shares} (weights {ALIASES[alias]}) over {n} users", flush=True)
    print(f"returning users on one model: {got['sticky']:.0%}; admission {got['admit_s'] * 1e3:.1f} ms/request")
    print(json.dumps({
        "requests_per_alias": n,
        "ab_split_max_deviation": round(got["deviation"], 4),
        "ab_split": got["split"],
        "ab_sticky_users": got["sticky"],
        "shadow": {"primary_ttft_p99_ratio": None, "note": "shadow traffic is not built yet (#30)"},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
