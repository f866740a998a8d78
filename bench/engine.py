"""Engine benchmark on CPU with a small random gpt-oss checkpoint.

Measured side by side in one run, on the same prompts:

- baseline: ``model.generate`` one prompt at a time (sequential);
- ossfleet's micro-batched engine (``engine: batched``) at concurrency 1, 8, 32;
- transformers' continuous batching through ``engine: transformers`` at the same concurrencies;
- the pipeline executor: 2 stages as Ray actors, with 1 micro-batch (no overlap)
  and with 2 (stages overlap), at concurrency 32.

Greedy decoding everywhere, every request generating exactly ``--new-tokens``
(no stop token), so token counts are equal. The headline is the batched
engine's tokens/s at concurrency 32 over sequential generate (target >= 4x).
The last line printed is one JSON object.

    python bench/engine.py --quick
"""

from __future__ import annotations

import os
import sys

# bench/ holds queue.py (the queue benchmark): keep the folder off the import
# path so it cannot shadow the standard library's `queue` here or in Ray workers.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def make_model(directory: Path) -> Path:
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    # The shape FACTS.md measured transformers' CB on: 4 layers, hidden 256, 8 experts top-2.
    spec = TinySpec(layers=4, hidden_size=256, heads=8, kv_heads=4, head_dim=32, experts=8, experts_per_token=2,
                    vocab_size=2000, sliding_window=32)  # fmt: skip
    return make_tiny_checkpoint(directory, spec)


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    # Ids from 10 up: none of the special tokens, so nothing stops early.
    return [[rng.randrange(10, 600) for _ in range(rng.randint(8, 40))] for _ in range(n)]


def sequential(path: Path, ps: list[list[int]], new_tokens: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    model.generation_config.eos_token_id = None  # generate exactly new_tokens
    t = time.perf_counter()
    with torch.no_grad():
        for p in ps:
            model.generate(torch.tensor([p]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return len(ps) * new_tokens / (time.perf_counter() - t)


async def drive(engine: Any, ps: list[list[int]], new_tokens: int, concurrency: int) -> float:
    from ossfleet.engine.base import EngineRequest, SamplingParams

    sem = asyncio.Semaphore(concurrency)
    counted = 0

    async def one(i: int, p: list[int]) -> None:
        nonlocal counted
        async with sem:
            req = EngineRequest(f"b{i}", p, SamplingParams(max_tokens=new_tokens, temperature=0), ())
            async for out in engine.generate(req):
                counted += len(out.token_ids)

    t = time.perf_counter()
    await asyncio.gather(*[one(i, p) for i, p in enumerate(ps)])
    elapsed = time.perf_counter() - t
    assert counted == len(ps) * new_tokens, (counted, len(ps) * new_tokens)
    return counted / elapsed


async def batched(path: Path, ps: list[list[int]], new_tokens: int, concurrency: int) -> float:
    from ossfleet.engine.batched import local_engine

    engine = local_engine(
        str(path), [(0, 4)], max_batch_size=max(concurrency, 1), micro_batches=1, max_context=256,
        torch_threads=torch.get_num_threads(),
    )  # fmt: skip
    await engine.start()
    try:
        await drive(engine, ps[:2], 4, 2)  # warm-up
        return await drive(engine, ps, new_tokens, concurrency)
    finally:
        await engine.stop()


async def continuous(path: Path, ps: list[list[int]], new_tokens: int, concurrency: int) -> float:
    from ossfleet.engine.hf import TransformersEngine

    engine = TransformersEngine(
        path, max_batch_size=max(concurrency, 1), max_context=256, torch_threads=torch.get_num_threads()
    )
    await engine.start()
    try:
        await drive(engine, ps[:2], 4, 2)
        return await drive(engine, ps, new_tokens, concurrency)
    finally:
        await engine.stop()


def pipeline(path: Path, ps: list[list[int]], new_tokens: int, micro_batches: int) -> float:
    import ray
    from ray.util.placement_group import placement_group

    from ossfleet.engine.batched import BatchedEngine, RayExecutor, ray_stage_actors

    pg = placement_group([{"CPU": 1}] * 2, strategy="PACK")
    ray.get(pg.ready())
    actors = ray_stage_actors(str(path), [(0, 2), (2, 4)], pg, num_gpus=0, num_cpus=1)
    ray.get([a.forward.remote(-1, torch.tensor([[11, 12]]), torch.ones(1, 2, dtype=torch.long),
                              torch.tensor([[0, 1]])) for a in actors[:1]])  # fmt: skip

    async def run() -> float:
        engine = BatchedEngine(RayExecutor(actors), max_batch_size=32, micro_batches=micro_batches, max_context=256)
        await engine.start()
        try:
            return await drive(engine, ps, new_tokens, 32)
        finally:
            await engine.stop()

    rate = asyncio.run(run())
    ray.util.remove_placement_group(pg)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="16 new tokens per prompt instead of 32")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every engine (1 is fastest here)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    new_tokens = 16 if args.quick else 32
    ps = prompts(args.prompts)
    out: dict[str, Any] = {"prompts": len(ps), "new_tokens": new_tokens, "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as d:
        path = make_model(Path(d) / "model")
        base = sequential(path, ps, new_tokens)
        out["sequential_generate_tok_s"] = round(base, 1)
        print(f"sequential generate: {base:.0f} tok/s", flush=True)
        for name, fn in (("batched", batched), ("transformers_cb", continuous)):
            out[name] = {}
            for c in (1, 8, 32):
                rate = asyncio.run(fn(path, ps, new_tokens, c))
                out[name][f"c{c}_tok_s"] = round(rate, 1)
                out[name][f"c{c}_vs_sequential"] = round(rate / base, 2)
                print(f"{name} c={c}: {rate:.0f} tok/s ({rate / base:.2f}x)", flush=True)
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            out["pipeline_2_stages_c32"] = {}
            for mb in (1, 2):
                rate = pipeline(path, ps, new_tokens, mb)
                out["pipeline_2_stages_c32"][f"micro_batches_{mb}_tok_s"] = round(rate, 1)
                print(f"pipeline 2 stages, {mb} micro-batch(es), c=32: {rate:.0f} tok/s", flush=True)
        finally:
            ray.shutdown()
    p = out["pipeline_2_stages_c32"]
    out["pipeline_microbatch_speedup"] = round(p["micro_batches_2_tok_s"] / p["micro_batches_1_tok_s"], 2)
    out["headline_batched_c32_vs_sequential"] = out["batched"]["c32_vs_sequential"]
    out["target_c32_vs_sequential"] = 4.0
    out["target_met"] = out["batched"]["c32_vs_sequential"] >= 4.0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
