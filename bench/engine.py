"""Engine benchmark on CPU with small random gpt-oss checkpoints; every figure side by side in one run.

- ``hol``: head-of-line blocking. A 4-token probe's time to first token on an
  idle engine, then while eight long requests (``ignore_eos``) generate;
  ossfleet's engine (``max_batch_size`` 16, one stage, the tiny 2-layer
  checkpoint) and transformers' continuous batching (``hol_transformers_cb``).
- ``open_loop``: requests whose prompt and output lengths come from the Azure
  conversation trace (../shared/traces, scaled to the tiny model's context).
  First each engine's capacity (tokens/s with 32 always in flight); then
  Poisson arrivals at 50% and 90% of ossfleet's capacity, the same arrival
  times replayed against ossfleet, transformers CB and sequential
  ``generate``: tokens/s, TTFT p50/p99, inter-token p99.
- ``batched``: closed loop at concurrency 1, 8, 32 against sequential
  ``generate`` on the same prompts (``c32_vs_sequential``).
- ``pipeline_microbatch_speedup``: 2 stages as Ray actors, 2 plans in flight
  over 1.
- ``detok``: the worker's per-token cost (harmony parse + detokenize) at the
  4,000th token of a message over the 100th.

Greedy everywhere. The last line printed is one JSON object.

    python bench/engine.py --quick
"""

from __future__ import annotations

import os
import sys

# Keep bench/ off the import path: bench/autoscaling.py would shadow the autoscaling package, here
# or in Ray workers.
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

    from ossfleet.engine.batched import BatchedEngine
    from ossfleet.engine.executors import RayExecutor, ray_stage_actors

    pg = placement_group([{"CPU": 1}] * 2, strategy="PACK")
    ray.get(pg.ready())
    actors = ray_stage_actors(str(path), [(0, 2), (2, 4)], pg, num_gpus=0, num_cpus=1)

    async def run() -> float:
        engine = BatchedEngine(RayExecutor(actors), max_batch_size=32, micro_batches=micro_batches, max_context=256)
        await engine.start()
        try:
            await drive(engine, ps[:2], 4, 2)  # warm-up
            return await drive(engine, ps, new_tokens, 32)
        finally:
            await engine.stop()

    rate = asyncio.run(run())
    ray.util.remove_placement_group(pg)
    return rate


# -- head-of-line blocking ------------------------------------------------------------------------


async def hol(engine: Any, long_tokens: int) -> dict[str, float]:
    """The probe's TTFT idle, then while 8 long requests run (each past its first token)."""
    from ossfleet.engine.base import EngineRequest, SamplingParams

    async def ttft(rid: str) -> float:
        t = time.perf_counter()
        gen = engine.generate(EngineRequest(rid, [11, 12, 13, 14], SamplingParams(max_tokens=4, temperature=0)))
        await gen.__anext__()
        first = time.perf_counter() - t
        async for _ in gen:
            pass
        return first

    await engine.start()
    try:
        await ttft("warm")
        idle = min([await ttft(f"idle{i}") for i in range(3)])
        started = asyncio.Event()
        running = 0
        count = [0]

        async def long(i: int) -> None:
            nonlocal running
            req = EngineRequest(
                f"long{i}", [20 + i, 21, 22, 23], SamplingParams(max_tokens=long_tokens, temperature=0, ignore_eos=True)
            )
            first = True
            async for out in engine.generate(req):
                count[0] += len(out.token_ids)
                if first:
                    first = False
                    running += 1
                    if running == 8:
                        started.set()

        longs = [asyncio.create_task(long(i)) for i in range(8)]
        await started.wait()
        loaded = await ttft("probe")
        still = count[0] < 8 * long_tokens
        await asyncio.gather(*longs)
    finally:
        await engine.stop()
    return {
        "idle_ttft_s": round(idle, 4),
        "loaded_ttft_s": round(loaded, 4),
        "ratio": round(loaded / idle, 1),
        "long_requests_still_running_at_probe": still,
    }


# -- open loop on the Azure trace -----------------------------------------------------------------

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure_llm_conv_2023-11-16.csv"


def trace_requests(n: int, seed: int = 0) -> list[tuple[list[int], int]]:
    """n (prompt, output length) pairs from the trace, scaled down (prompt / 16, output / 8) for a tiny model."""
    import csv

    rows = []
    with TRACE.open(newline="") as f:
        for r in csv.DictReader(f):
            rows.append((int(r["ContextTokens"]), int(r["GeneratedTokens"])))
    rng = random.Random(seed)
    out = []
    for ctx, gen in rng.sample(rows, n):
        plen = max(4, min(256, ctx // 16))
        out.append(([rng.randrange(10, 600) for _ in range(plen)], max(2, min(96, gen // 8))))
    return out


class SequentialGenerate:
    """``model.generate`` one request at a time, in arrival order, streaming tokens: the no-batching baseline."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.model.generation_config.eos_token_id = None
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def generate(self, request: Any) -> Any:
        from transformers.generation.streamers import BaseStreamer

        from ossfleet.engine.base import TokenOutput

        loop = asyncio.get_running_loop()
        q: asyncio.Queue[list[int]] = asyncio.Queue()

        class Streamer(BaseStreamer):
            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                loop.call_soon_threadsafe(q.put_nowait, [int(x) for x in value.flatten()])

            def end(self) -> None:
                loop.call_soon_threadsafe(q.put_nowait, [])

        n = request.sampling.max_tokens

        def run() -> None:
            with torch.no_grad():
                self.model.generate(
                    torch.tensor([request.prompt_ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                    streamer=Streamer(),
                )  # fmt: skip

        async with self.lock:
            task = asyncio.create_task(asyncio.to_thread(run))
            got = 0
            while True:
                ids = await q.get()
                if not ids:
                    break
                got += len(ids)
                yield TokenOutput(ids, got >= n, "length" if got >= n else None)
            await task


async def replay(engine: Any, reqs: list[tuple[list[int], int]], arrivals: list[float] | None) -> dict[str, Any]:
    """Send the requests at ``arrivals`` (seconds from start; None: 32 always in flight). TTFT and ITL per token."""
    from ossfleet.engine.base import EngineRequest, SamplingParams

    ttft: list[float] = []
    itl: list[float] = []
    tokens = 0
    sem = asyncio.Semaphore(32)
    t0 = time.perf_counter()
    started = 0
    saturated: list[tuple[float, int]] = []  # (time, tokens) when the last request started

    async def one(i: int, prompt: list[int], n: int) -> None:
        nonlocal tokens
        if arrivals is not None:
            await asyncio.sleep(max(0.0, t0 + arrivals[i] - time.perf_counter()))
        async with sem if arrivals is None else _null():
            nonlocal started
            started += 1
            if started == len(reqs):
                saturated.append((time.perf_counter(), tokens))
            sent = time.perf_counter()
            last = None
            req = EngineRequest(f"o{i}", prompt, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
            async for out in engine.generate(req):
                now = time.perf_counter()
                if out.token_ids:
                    if last is None:
                        ttft.append(now - sent)
                    else:
                        itl.append(now - last)
                    last = now
                    tokens += len(out.token_ids)

    await asyncio.gather(*[one(i, p, n) for i, (p, n) in enumerate(reqs)])
    elapsed = time.perf_counter() - t0
    out = {
        "tok_s": round(tokens / elapsed, 1),
        "ttft_p50_s": round(_pct(ttft, 50), 4),
        "ttft_p99_s": round(_pct(ttft, 99), 4),
        "itl_p99_s": round(_pct(itl, 99), 4),
    }
    if arrivals is None and saturated and saturated[0][0] > t0:
        # Closed loop: the rate while 32 were always in flight (before the tail of the last few).
        out["saturated_tok_s"] = round(saturated[0][1] / (saturated[0][0] - t0), 1)
    return out


class _null:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *a: object) -> None:
        return None


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def engines(path: Path) -> dict[str, Any]:
    from ossfleet.engine.batched import local_engine
    from ossfleet.engine.hf import TransformersEngine

    return {
        "ossfleet": lambda: local_engine(str(path), [(0, 4)], max_batch_size=32, max_context=512, torch_threads=1),
        "transformers_cb": lambda: TransformersEngine(path, max_batch_size=32, max_context=512, torch_threads=1),
        "sequential_generate": lambda: SequentialGenerate(path),
    }


async def open_loop(path: Path, n: int) -> dict[str, Any]:
    reqs = trace_requests(n)  # capacity runs them three times over, to reach a steady state
    mean_out = sum(k for _, k in reqs) / len(reqs)
    make = engines(path)
    out: dict[str, Any] = {"requests": n, "mean_prompt_tokens": round(sum(len(p) for p, _ in reqs) / n, 1),
                           "mean_output_tokens": round(mean_out, 1)}  # fmt: skip
    capacity: dict[str, float] = {}
    for name in ("ossfleet", "transformers_cb"):
        engine = make[name]()
        await engine.start()
        try:
            await replay(engine, reqs[:4], None)  # warm-up
            if name == "ossfleet":
                idle = [(await replay(engine, [r], None))["ttft_p50_s"] for r in reqs[:8]]
                out["idle_ttft_s"] = round(sorted(idle)[len(idle) // 2], 4)
            capacity[name] = (await replay(engine, reqs * 3, None))["saturated_tok_s"]
        finally:
            await engine.stop()
        print(f"open loop: {name} capacity {capacity[name]:.0f} tok/s", flush=True)
    out["capacity_tok_s"] = capacity
    rng = random.Random(1)
    for load in (0.5, 0.9):
        rate = load * capacity["ossfleet"] / mean_out  # requests per second
        t, arrivals = 0.0, []
        for _ in reqs:
            t += rng.expovariate(rate)
            arrivals.append(t)
        key = f"load_{int(load * 100)}"
        out[key] = {"rate_req_s": round(rate, 2)}
        for name, factory in make.items():
            engine = factory()
            await engine.start()
            try:
                await replay(engine, reqs[:2], None)
                out[key][name] = await replay(engine, reqs, arrivals)
            finally:
                await engine.stop()
            print(f"open loop {key}: {name} {out[key][name]}", flush=True)
    out["ttft_p99_vs_idle"] = round(out["load_90"]["ossfleet"]["ttft_p99_s"] / out["idle_ttft_s"], 1)
    out["tok_s_vs_transformers_cb"] = round(capacity["ossfleet"] / capacity["transformers_cb"], 2)
    return out


# -- incremental detokenization ---------------------------------------------------------------------


def detok(path: Path, repeat: int) -> dict[str, Any]:
    """Per-token cost of the worker's parse + detokenize near the 100th and the 4,000th token of a message."""
    from transformers import AutoTokenizer

    from ossfleet.chatformat import ChatFormat
    from ossfleet.harmony import HarmonyStreamParser, SpecialIds

    tok = AutoTokenizer.from_pretrained(path)
    ids = SpecialIds.of(tok)
    body = tok.encode("the quick brown fox jumps over the lazy dog, " * 600, add_special_tokens=False)[:4100]
    header = [ids.channel, *tok.encode("final", add_special_tokens=False), ids.message]

    def cost(at: int) -> float:
        best = float("inf")
        for _ in range(repeat):
            for make in (lambda: HarmonyStreamParser(tok, "r"), lambda: ChatFormat.of(tok).parser(tok, "r", raw=True)):
                p = make()
                p.feed(header + body[: at - 50])
                t = time.perf_counter()
                for x in body[at - 50 : at + 50]:
                    p.feed([x])
                best = min(best, (time.perf_counter() - t) / 100)
        return best

    c100, c4000 = cost(100), cost(4000)
    return {"per_token_us_at_100": round(c100 * 1e6, 1), "per_token_us_at_4000": round(c4000 * 1e6, 1),
            "cost_ratio_4000_vs_100": round(c4000 / c100, 2)}  # fmt: skip


def vllm_spec() -> Any:
    """The checkpoint vLLM was first measured on here (FACTS.md): head_dim 64, which its CPU kernels take."""
    from ossfleet.tinymodel import TinySpec

    return TinySpec(layers=4, hidden_size=256, heads=8, kv_heads=4, head_dim=64, experts=8, experts_per_token=2)


def vllm_load(n: int, seed: int) -> list[list[int]]:
    """``n`` prompts of 8-71 tokens (ids clear of the special tokens), as FACTS.md's comparison."""
    rng = random.Random(seed)
    return [[rng.randrange(10, 600) for _ in range(rng.randint(8, 71))] for _ in range(n)]


async def _vllm_bare(llm: Any, ps: list[list[int]], new_tokens: int, concurrency: int, tag: str) -> float:
    """vLLM's own AsyncLLM: token ids in, token ids out, nothing of ossfleet."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    sem = asyncio.Semaphore(concurrency)
    counted = 0

    async def one(i: int, p: list[int]) -> None:
        nonlocal counted
        sp = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True, detokenize=False,
                            output_kind=RequestOutputKind.DELTA)  # fmt: skip
        async with sem:
            async for out in llm.generate({"prompt_token_ids": p}, sp, request_id=f"{tag}{i}"):
                counted += len(out.outputs[0].token_ids)

    t = time.perf_counter()
    await asyncio.gather(*[one(i, p) for i, p in enumerate(ps)])
    assert counted == len(ps) * new_tokens, counted
    return counted / (time.perf_counter() - t)


async def _vllm_worker(engine: Any, tok: Any, ps: list[list[int]], new_tokens: int, concurrency: int) -> float:
    """The replica's per-request path over the same engine: a Generation per request (the EngineRequest the
    worker builds, harmony parsing of the output, stream events, the tenant's cache salt)."""
    from ossfleet.protocol.work import WorkItem
    from ossfleet.replica.generation import Generation, TokenBytes

    sem = asyncio.Semaphore(concurrency)
    counted = 0
    token_bytes = TokenBytes(tok)

    async def one(i: int, p: list[int]) -> None:
        nonlocal counted
        item = WorkItem(p, new_tokens, temperature=0, ignore_eos=True)
        async with sem:
            gen = Generation(tok, f"w{i}", item, token_bytes=token_bytes, cache_salt="bench")
            async for _events in gen.run(engine):
                pass
            counted += gen.output_tokens

    t = time.perf_counter()
    await asyncio.gather(*[one(i, p) for i, p in enumerate(ps)])
    assert counted == len(ps) * new_tokens, counted
    return counted / (time.perf_counter() - t)


async def _prefix_ttft(engine: Any, prefix_tokens: int, repeats: int) -> dict[str, Any]:
    """TTFT of a request whose first ``prefix_tokens`` tokens (a shared system prompt) were just computed for
    the same tenant, over an uncached one of the same length; medians of ``repeats`` prefixes."""
    from ossfleet.engine.base import EngineRequest, SamplingParams

    async def ttft(rid: str, prompt: list[int], salt: str) -> float:
        t = time.perf_counter()
        gen = engine.generate(EngineRequest(rid, prompt, SamplingParams(max_tokens=1, temperature=0), (),
                                            cache_salt=salt))  # fmt: skip
        async for _ in gen:
            break
        first = time.perf_counter() - t
        async for _ in gen:
            pass
        return first

    rng = random.Random(11)
    cold, warm = [], []
    for r in range(repeats):
        prefix = [rng.randrange(10, 600) for _ in range(prefix_tokens)]
        cold.append(await ttft(f"c{r}", [*prefix, 11, 12, 13], "tenant-a"))
        warm.append(await ttft(f"w{r}", [*prefix, 21, 22, 23], "tenant-a"))
    cold.sort()
    warm.sort()
    c, w = cold[len(cold) // 2], warm[len(warm) // 2]
    return {"uncached_ttft_ms": round(c * 1e3, 1), "cached_ttft_ms": round(w * 1e3, 1), "ratio": round(w / c, 3)}


def vllm_section(directory: Path, quick: bool, threads: int) -> dict[str, Any]:
    """vLLM under ossfleet (engine: vllm) against vLLM alone and against ossfleet's batched engine, one run."""
    from transformers import AutoTokenizer

    from ossfleet.engine.vllm import VllmEngine, VllmOptions
    from ossfleet.tinymodel import make_tiny_checkpoint

    path = make_tiny_checkpoint(directory / "vllm-wide", vllm_spec())
    n, new_tokens, concurrency = (48 if quick else 96), 64, 32
    bare_load, worker_load = vllm_load(n, 1), vllm_load(n, 2)  # same lengths' spread, no shared prefixes
    out: dict[str, Any] = {"requests": n, "new_tokens": new_tokens, "concurrency": concurrency, "dtype": "bfloat16",
                           "threads": threads}  # fmt: skip
    tok = AutoTokenizer.from_pretrained(path)
    engine = VllmEngine(path, VllmOptions(dtype="bfloat16", max_slots=concurrency, max_context=2048, kv_cache_gib=2,
                                          torch_threads=threads))  # fmt: skip

    async def run() -> None:
        await engine.start()
        try:
            await _vllm_bare(engine._llm, vllm_load(8, 9), 8, 8, "warm")
            out["bare_tok_s"] = round(await _vllm_bare(engine._llm, bare_load, new_tokens, concurrency, "b"), 1)
            print(f"vLLM AsyncLLM: {out['bare_tok_s']} tok/s", flush=True)
            out["through_worker_tok_s"] = round(await _vllm_worker(engine, tok, worker_load, new_tokens, concurrency),
                                                1)  # fmt: skip
            print(f"vLLM through the worker's path: {out['through_worker_tok_s']} tok/s", flush=True)
            out["prefix_cache"] = await _prefix_ttft(engine, 1000, 3 if quick else 5)
            print(f"prefix cache: {out['prefix_cache']}", flush=True)
        finally:
            await engine.stop()

    asyncio.run(run())
    out["worker_over_bare"] = round(out["through_worker_tok_s"] / out["bare_tok_s"], 3)
    out["prefix_cache_ttft_ratio"] = out["prefix_cache"]["ratio"]

    async def ours() -> float:
        from ossfleet.engine.batched import local_engine

        e = local_engine(str(path), [(0, 4)], max_batch_size=concurrency, micro_batches=1, max_context=256,
                         torch_threads=threads, dtype="bfloat16")  # fmt: skip
        await e.start()
        try:
            await drive(e, vllm_load(4, 9), 4, 4)
            return await drive(e, bare_load, new_tokens, concurrency)
        finally:
            await e.stop()

    out["batched_tok_s"] = round(asyncio.run(ours()), 1)
    print(f"ossfleet batched engine: {out['batched_tok_s']} tok/s", flush=True)
    out["batched_over_vllm"] = round(out["batched_tok_s"] / out["bare_tok_s"], 3)
    out["goals"] = {"worker_over_bare": ">= 0.9", "prefix_cache_ttft_ratio": "<= 0.3"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter runs: fewer trace requests, shorter long requests")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every engine (1 is fastest here)")
    ap.add_argument("--vllm-only", action="store_true", help="only the vLLM section (key vllm)")
    ap.add_argument("--vllm-threads", type=int, default=2, help="threads for the vLLM section's engines")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    from ossfleet.engine.vllm import vllm_available

    if args.vllm_only:
        torch.set_num_threads(args.vllm_threads)
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps({"vllm": vllm_section(Path(d), args.quick, args.vllm_threads)}))
        return
    new_tokens = 16 if args.quick else 32
    long_tokens = 600 if args.quick else 3000
    ps = prompts(args.prompts)
    out: dict[str, Any] = {"prompts": len(ps), "new_tokens": new_tokens, "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as d:
        from ossfleet.engine.batched import local_engine
        from ossfleet.engine.hf import TransformersEngine
        from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

        tiny = make_tiny_checkpoint(Path(d) / "tiny-2l", TinySpec(layers=2))
        ctx = long_tokens + 64
        ours = local_engine(str(tiny), [(0, 2)], max_batch_size=16, max_context=ctx)
        out["hol"] = asyncio.run(hol(ours, long_tokens))
        print(f"hol ossfleet: {out['hol']}", flush=True)
        out["hol_transformers_cb"] = asyncio.run(hol(TransformersEngine(tiny, max_batch_size=16, max_context=ctx),
                                                     long_tokens))  # fmt: skip
        print(f"hol transformers CB: {out['hol_transformers_cb']}", flush=True)
        out["detok"] = detok(tiny, 3)
        print(f"detok: {out['detok']}", flush=True)

        path = make_model(Path(d) / "model")
        out["open_loop"] = asyncio.run(open_loop(path, 48 if args.quick else 160))
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
                out["pipeline_2_stages_c32"][f"in_flight_{mb}_tok_s"] = round(rate, 1)
                print(f"pipeline 2 stages, {mb} plan(s) in flight, c=32: {rate:.0f} tok/s", flush=True)
        finally:
            ray.shutdown()
    if vllm_available():  # .venv-vllm (make vllm): vLLM in the same run
        torch.set_num_threads(args.vllm_threads)
        with tempfile.TemporaryDirectory() as d:
            out["vllm"] = vllm_section(Path(d), args.quick, args.vllm_threads)
    else:
        out["vllm"] = {"skipped": "vLLM is not importable here: run with .venv-vllm/bin/python (make vllm)"}
    p = out["pipeline_2_stages_c32"]
    out["pipeline_microbatch_speedup"] = round(p["in_flight_2_tok_s"] / p["in_flight_1_tok_s"], 2)
    out["goals"] = {"hol.ratio": "<= 10", "open_loop.ttft_p99_vs_idle": "<= 10",
                    "open_loop.tok_s_vs_transformers_cb": ">= 1.3", "batched.c32_vs_sequential": ">= 4",
                    "pipeline_microbatch_speedup": ">= 1.3", "detok.cost_ratio_4000_vs_100": "<= 2"}  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
