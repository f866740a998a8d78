"""Batch benchmark: dedicated mode's throughput against the engine's own maximum.

Measured side by side in one run, on the same rendered prompts:

- baseline: ossfleet's batched engine driven directly, every request submitted
  at once (its maximum: no Ray Data, no Redis, no files), in a Ray worker with
  the same resources as the dedicated engine actor;
- dedicated mode: a real batch job (JSONL validated, prepared file written,
  Ray Data read -> engine actor pool -> rows recorded in Redis with their
  charges, output file written), run by the same JobRunner the platform uses.

Both run one engine with the same slots and torch threads on this machine's
CPU (a logical GPU for the actor). Greedy decoding; throughput counts the
tokens actually generated. Dedicated mode is reported end to end (with the
actor's start-up: model load, Ray Data planning) and at steady state (from its
first recorded row). Target: steady-state tokens/s >= 80% of the baseline.
The last line printed is one JSON object.

    python bench/batch.py --quick
"""

from __future__ import annotations

import os
import sys

# Keep bench/ off the import path: bench/autoscaling.py would shadow the autoscaling package, here
# or in Ray workers.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

# One intra-op thread, as Ray gives the dedicated engine actor (OMP_NUM_THREADS=1 for
# num_cpus=1): both sides then run with the same threads (more ran slower on 2 cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

SLOTS = 32


def make_model(directory: Path) -> Path:
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    # The shape FACTS.md measured transformers' CB on (as bench/engine.py).
    spec = TinySpec(layers=4, hidden_size=256, heads=8, kv_heads=4, head_dim=32, experts=8, experts_per_token=2,
                    vocab_size=2000, sliding_window=32)  # fmt: skip
    return make_tiny_checkpoint(directory, spec)


def lines(n: int, max_tokens: int) -> list[dict[str, Any]]:
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "seven", "green", "quick"]
    return [
        {"custom_id": f"row-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gpt-oss-20b", "max_tokens": max_tokens, "temperature": 0,
                  "messages": [{"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(4, 24)))}]}}
        for i in range(n)
    ]  # fmt: skip


def config(path: Path, storage: Path) -> dict[str, Any]:
    return {
        "redis": {"namespace": "benchbatch"},
        "batch": {"storage_url": str(storage), "dedicated_max_actors": 1, "dedicated_rows_per_call": 2 * SLOTS,
                  "max_lines": 100_000},
        "models": [{"name": "gpt-oss-20b", "spec": "gpt-oss-20b", "path": str(path), "engine": "batched",
                    "max_batch_size": SLOTS, "max_context": 512, "torch_threads": 1, "num_gpus": 1, "num_cpus": 1,
                    "price": {"input_per_1k": 0.001, "output_per_1k": 0.002}}],
        "tenants": [{"name": "bench", "budget": {"limit_usd": 10_000}}],
    }  # fmt: skip


async def engine_max(cfg: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """The engine alone: every row's prompt submitted at once, as many running as it has slots."""
    import torch
    from transformers import AutoTokenizer

    from ossfleet.engine.base import EngineRequest
    from ossfleet.engine.factory import build_engine
    from ossfleet.harmony import HarmonyRenderer, SpecialIds
    from ossfleet.protocol.openai import batch_request
    from ossfleet.protocol.work import WorkItem
    from ossfleet.replica.generation import sampling_of

    torch.set_num_threads(1)
    m = cfg.models[0]
    tok = AutoTokenizer.from_pretrained(cfg.model_path(m))
    renderer, special = HarmonyRenderer(tok), SpecialIds.of(tok)
    reqs = []
    for i, row in enumerate(rows):
        r = batch_request("/v1/chat/completions", row["body"], cfg.limits)
        prompt = renderer.render(r.messages, effort="medium")
        sampling = sampling_of(WorkItem(prompt, r.max_tokens, temperature=0))
        reqs.append(EngineRequest(f"e{i}", prompt, sampling, special.stop))
    engine = await build_engine(cfg, m, tok)
    tokens = 0

    async def one(req: EngineRequest) -> None:
        nonlocal tokens
        async for out in engine.generate(req):
            tokens += len(out.token_ids)

    try:
        await asyncio.gather(*(one(r) for r in reqs[:SLOTS]))  # warm-up
        tokens = 0
        t = time.perf_counter()
        await asyncio.gather(*(one(r) for r in reqs))
        elapsed = time.perf_counter() - t
    finally:
        await engine.stop()
    return {"rows_s": len(reqs) / elapsed, "tokens_s": tokens / elapsed, "tokens": tokens, "seconds": elapsed}


async def dedicated(cfg: Any, redis_url: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """A real dedicated-mode job, from the uploaded file to the written output file."""
    from ossfleet.batch.runner import JobRunner
    from ossfleet.batch.service import batch_service
    from ossfleet.control.gateway import GatewayCore

    core = GatewayCore(cfg, redis_url)
    batches = batch_service(core)
    t = core.cfg.tenants[0]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    f = await batches.upload(t, "bench.jsonl", "batch", data)
    batches.start_driver = lambda job_id: None  # this process runs the job itself, below
    job = await batches.create(t, f.id, "/v1/chat/completions", "24h", mode="dedicated")
    assert job.status == "in_progress", job.errors[:3]
    runner = JobRunner(core, batches.store, batches.storage, job.id)
    start = time.perf_counter()
    status = await runner.run()
    end, end_wall = time.perf_counter(), time.time()
    done = await batches.get(t, job.id)
    assert status == "completed" and done.completed == len(rows), (status, done.completed, done.failed)
    out = [json.loads(x) for x in (await batches.content(t, done.output_file_id)).decode().splitlines()]
    tokens = sum(x["response"]["body"]["usage"]["completion_tokens"] for x in out)
    # Steady state: from the moment the engine actor first had rows (after its
    # start-up: process, weights, Ray Data planning) to the job's end (output file written).
    engine_started = float(await batches.store.r.hget(batches.store.keys.batch(job.id), "engine_started_at"))
    steady = end_wall - engine_started
    await core.close()
    return {
        "rows_s_end_to_end": len(rows) / (end - start),
        "tokens_s_end_to_end": tokens / (end - start),
        "rows_s_steady": len(rows) / steady,
        "tokens_s_steady": tokens / steady,
        "startup_s": (end - start) - steady,
        "tokens": tokens,
        "seconds": end - start,
    }


def _engine_max_task(raw_cfg: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, float]:
    from ossfleet.config import parse_config

    return asyncio.run(engine_max(parse_config(raw_cfg, "<bench>"), rows))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="512 rows of 16 tokens instead of 2048 of 32")
    args = ap.parse_args()
    import ray

    from ossfleet.config import parse_config
    from ossfleet.redisdb import EmbeddedRedis

    n, max_tokens = (512, 16) if args.quick else (2048, 32)
    rows = lines(n, max_tokens)
    with tempfile.TemporaryDirectory() as d:
        path = make_model(Path(d) / "model")
        raw_cfg = config(path, Path(d) / "files")
        cfg = parse_config(raw_cfg, "<bench>")
        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
        try:
            # The baseline runs where the dedicated actor runs: a Ray worker with 1 CPU and the GPU.
            base = ray.get(ray.remote(num_cpus=1, num_gpus=1)(_engine_max_task).remote(raw_cfg, rows))
            print(f"engine alone: {base['rows_s']:.1f} rows/s, {base['tokens_s']:.0f} tok/s", flush=True)
            with EmbeddedRedis(Path(d) / "redis") as redis:
                ded = asyncio.run(dedicated(cfg, redis.url, rows))
        finally:
            ray.shutdown()
    print(
        f"dedicated mode: {ded['rows_s_steady']:.1f} rows/s, {ded['tokens_s_steady']:.0f} tok/s steady; "
        f"{ded['rows_s_end_to_end']:.1f} rows/s end to end ({ded['startup_s']:.1f} s start-up)",
        flush=True,
    )
    ratio = ded["tokens_s_steady"] / base["tokens_s"]
    out = {
        "rows": n,
        "max_tokens": max_tokens,
        "slots": SLOTS,
        "engine_rows_s": round(base["rows_s"], 1),
        "engine_tokens_s": round(base["tokens_s"], 1),
        "dedicated_rows_s_steady": round(ded["rows_s_steady"], 1),
        "dedicated_tokens_s_steady": round(ded["tokens_s_steady"], 1),
        "dedicated_rows_s_end_to_end": round(ded["rows_s_end_to_end"], 1),
        "dedicated_tokens_s_end_to_end": round(ded["tokens_s_end_to_end"], 1),
        "dedicated_startup_s": round(ded["startup_s"], 1),
        # Greedy decoding of the same prompts: both generate the same tokens.
        "engine_tokens": base["tokens"],
        "dedicated_tokens": ded["tokens"],
        "steady_vs_engine": round(ratio, 3),
        "end_to_end_vs_engine": round(ded["tokens_s_end_to_end"] / base["tokens_s"], 3),
        "target_vs_engine": 0.8,
        "target_met": ratio >= 0.8,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
