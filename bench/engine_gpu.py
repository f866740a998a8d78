"""Engine benchmark on a GPU: gpt-oss-20b's full shape, and one gpt-oss-120b pipeline stage.

Both models are randomly initialised in bf16 directly on the GPU (no weights
are downloaded): gpt-oss-20b with all 24 layers (about 42 GB with the experts
in bf16), and a slice of gpt-oss-120b's shape with ``--stage-layers`` layers,
the work of one stage of a pipeline. For each, side by side in one run:
sequential ``model.generate`` (one prompt at a time) against ossfleet's
engine at several concurrencies, in both weight formats: ``bf16`` (experts
dense) and then ``mxfp4`` (the same experts quantized in place and kept
packed, dequantized per step for the experts a step routes to), with the GPU
memory each format holds. Greedy, no stop tokens, so every request generates
exactly the number of new tokens.

It imports only torch, transformers and ossfleet's engine modules (no Ray,
no pydantic, no network), so it runs in a bare GPU environment with
``PYTHONPATH=platform``.

It refuses to run without a CUDA GPU. Record what it prints in bench/RESULTS.md.
The last line printed is one JSON object.

    python bench/engine_gpu.py --quick
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # bench/autoscaling.py must not shadow the autoscaling package

import argparse
import asyncio
import gc
import json
import random
import time
from typing import Any

import torch


def build(layers: int, experts: int, dtype: torch.dtype) -> Any:
    from transformers import GptOssConfig, GptOssForCausalLM

    cfg = GptOssConfig(
        num_hidden_layers=layers,
        num_local_experts=experts,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = GptOssForCausalLM(cfg).to(dtype).eval()
    model.generation_config.eos_token_id = None
    return model


def prompts(n: int, lo: int, hi: int) -> list[list[int]]:
    rng = random.Random(0)
    return [[rng.randrange(1000, 190000) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def sequential(model: Any, ps: list[list[int]], new: int) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.no_grad():
        for p in ps:
            model.generate(torch.tensor([p], device="cuda"), max_new_tokens=new, min_new_tokens=new, do_sample=False)
    torch.cuda.synchronize()
    return len(ps) * new / (time.perf_counter() - t)


async def engine_rate(stage: Any, ps: list[list[int]], new: int, concurrency: int) -> float:
    from ossfleet.engine.base import EngineRequest, SamplingParams
    from ossfleet.engine.batched import BatchedEngine
    from ossfleet.engine.executors import LocalExecutor

    longest = max(len(p) for p in ps) + new
    engine = BatchedEngine(
        LocalExecutor([stage]), max_batch_size=concurrency, max_context=131072,
        kv_cache_tokens=concurrency * longest, max_step_tokens=max(2048, concurrency),
    )  # fmt: skip
    await engine.start()
    sem = asyncio.Semaphore(concurrency)
    count = 0

    async def one(i: int, p: list[int]) -> None:
        nonlocal count
        async with sem:
            async for out in engine.generate(EngineRequest(f"g{i}", p, SamplingParams(max_tokens=new, temperature=0))):
                count += len(out.token_ids)

    try:
        t = time.perf_counter()
        await asyncio.gather(*[one(i, p) for i, p in enumerate(ps)])
        torch.cuda.synchronize()
        return count / (time.perf_counter() - t)
    finally:
        await engine.stop()


def measure(name: str, model: Any, ps: list[list[int]], new: int, seq_n: int, concurrencies: list[int]) -> dict:
    from ossfleet.engine.stages import PipelineStage

    out: dict[str, Any] = {}
    sequential(model, ps[:1], 4)  # warm-up
    base = sequential(model, ps[:seq_n], new)
    out["sequential_generate_tok_s"] = round(base, 1)
    print(f"{name}: sequential generate {base:.0f} tok/s", flush=True)
    for weights in ("bf16", "mxfp4"):  # mxfp4 last: it packs the model's experts in place
        stage = PipelineStage.whole_model(model, weights=weights)
        gc.collect()
        torch.cuda.empty_cache()
        res: dict[str, Any] = {"weight_gib": round(stage.param_bytes() / 2**30, 2)}
        for c in concurrencies:
            rate = asyncio.run(engine_rate(stage, ps[: max(c * 2, seq_n)], new, c))
            res[f"c{c}_tok_s"] = round(rate, 1)
            res[f"c{c}_vs_sequential"] = round(rate / base, 2)
            print(f"{name} {weights}: engine c={c} {rate:.0f} tok/s ({rate / base:.2f}x)", flush=True)
        res["max_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
        out[weights] = res
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--stage-layers", type=int, default=9, help="layers of the gpt-oss-120b stage (36 / 4)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        msg = "bench/engine_gpu.py needs a CUDA GPU and this machine has none; run bench/engine.py for the CPU figures"
        print(msg, file=sys.stderr)
        print(json.dumps({"error": "no CUDA GPU available"}))
        return 2
    new = 32 if args.quick else 128
    conc = [1, 8, 32] if args.quick else [1, 8, 32, 64]
    ps = prompts(128, 128, 512)
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "new_tokens": new, "dtype": "bfloat16"}
    model = build(24, 32, torch.bfloat16)
    result["gpt_oss_20b_full_shape"] = measure("gpt-oss-20b", model, ps, new, 4 if args.quick else 8, conc)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    model = build(args.stage_layers, 128, torch.bfloat16)
    result[f"gpt_oss_120b_stage_{args.stage_layers}_layers"] = measure(
        "gpt-oss-120b stage", model, ps, new, 4 if args.quick else 8, conc
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
