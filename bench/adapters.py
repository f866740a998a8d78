"""LoRA adapter benchmark: what serving many tenants' fine-tunes on one replica costs, in one run.

- ``mixed_vs_base``: tokens/s of 16 concurrent requests on the base model
  alone, against 16 concurrent requests spread over 4 different adapters
  (4 each, all loaded) on the same engine, rounds alternated so both see the
  same machine. The adapters' deltas run per row (``engine/lora.py``): base
  projections once over the step, then each adapter's ``(x A^T) B^T`` on its
  rows.
- ``cold_load_s``: a cold adapter load as a replica does it: both files read
  from the file storage (a local folder here), the tensors parsed, cast and
  placed on the engine (median over the adapters).
  ``gpt_oss_20b_shape_rank16``: the read-and-parse part of a cold load for an
  adapter of gpt-oss-20b's real shapes (rank 16 on q/k/v/o, bf16, ~16 MB).

The model is a small random gpt-oss (4 layers, hidden 256, 8 experts, as
``bench/engine.py`` uses); the adapters are PEFT's own (rank 16 on q/k/v/o).
Greedy, fixed output length. The last line printed is one JSON object.

    python bench/adapters.py --quick
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
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ADAPTERS = 4
CONCURRENCY = 16


def make_model(directory: Path) -> Path:
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    spec = TinySpec(layers=4, hidden_size=256, heads=8, kv_heads=4, head_dim=32, experts=8, experts_per_token=2,
                    vocab_size=2000, sliding_window=32)  # fmt: skip
    return make_tiny_checkpoint(directory, spec)


async def rate(engine: Any, adapters: list[str | None], new_tokens: int, seed: int) -> float:
    """Tokens/s of CONCURRENCY requests at once, request i on ``adapters[i % len(adapters)]``."""
    from ossfleet.engine.base import EngineRequest, SamplingParams

    rng = random.Random(seed)
    ps = [[rng.randrange(10, 600) for _ in range(rng.randint(16, 48))] for _ in range(CONCURRENCY)]
    sp = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
    counted = 0

    async def one(i: int) -> None:
        nonlocal counted
        req = EngineRequest(f"r{seed}-{i}", ps[i], sp, (), adapter=adapters[i % len(adapters)])
        async for out in engine.generate(req):
            counted += len(out.token_ids)

    t = time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(CONCURRENCY)])
    elapsed = time.perf_counter() - t
    assert counted == CONCURRENCY * new_tokens
    return counted / elapsed


async def run(path: Path, root: Path, new_tokens: int, rounds: int) -> dict[str, Any]:
    from ossfleet.adapters.store import read_adapter
    from ossfleet.engine.batched import local_engine
    from ossfleet.storage import FileStorage
    from ossfleet.tinymodel import make_tiny_adapter

    storage = FileStorage(str(root))
    names = [f"tenant{i}/support" for i in range(ADAPTERS)]
    folders = [make_tiny_adapter(path, root / f"a{i}", seed=i, rank=16, alpha=16) for i in range(ADAPTERS)]
    engine = local_engine(str(path), [(0, 4)], max_batch_size=CONCURRENCY, max_context=256,
                          torch_threads=torch.get_num_threads())  # fmt: skip
    await engine.start()
    try:
        loads = []
        for name, folder in zip(names, folders, strict=True):
            t = time.perf_counter()
            config, data = await asyncio.to_thread(read_adapter, storage, str(folder))
            await engine.load_adapter(name, config, data)
            loads.append(time.perf_counter() - t)
        await rate(engine, [None], 4, seed=99)  # warm-up, both paths
        await rate(engine, list(names), 4, seed=98)
        base, mixed = [], []
        for r in range(rounds):
            base.append(await rate(engine, [None], new_tokens, seed=r))
            mixed.append(await rate(engine, list(names), new_tokens, seed=r))
            print(f"round {r}: base {base[-1]:.0f} tok/s, {ADAPTERS} adapters {mixed[-1]:.0f} tok/s", flush=True)
    finally:
        await engine.stop()
    b, m = statistics.median(base), statistics.median(mixed)
    return {
        "concurrency": CONCURRENCY, "adapters": ADAPTERS, "rank": 16, "new_tokens": new_tokens, "rounds": rounds,
        "base_tok_s": round(b, 1), "mixed_tok_s": round(m, 1), "mixed_vs_base": round(m / b, 3),
        "cold_load_s": round(statistics.median(loads), 4), "cold_load_s_max": round(max(loads), 4),
        "adapter_bytes": (folders[0] / "adapter_model.safetensors").stat().st_size,
    }  # fmt: skip


def full_size_load(root: Path) -> dict[str, Any]:
    """The read-and-parse part of a cold load for an adapter of gpt-oss-20b's real shapes (24 layers, rank 16
    on q/k/v/o, bf16): what a replica does before the weights reach the GPU."""
    from safetensors.torch import save

    from ossfleet.adapters.format import ModelShape
    from ossfleet.adapters.store import read_adapter
    from ossfleet.engine.lora import load_lora
    from ossfleet.storage import FileStorage

    shape = ModelShape(layers=24, hidden=2880, heads=64, kv_heads=8, head_dim=64)
    tensors = {}
    for layer in range(shape.layers):
        for mo in ("q_proj", "k_proj", "v_proj", "o_proj"):
            fan_in, fan_out = shape.dims(mo)
            pre = f"base_model.model.model.layers.{layer}.self_attn.{mo}"
            tensors[f"{pre}.lora_A.weight"] = torch.randn(16, fan_in, dtype=torch.bfloat16)
            tensors[f"{pre}.lora_B.weight"] = torch.randn(fan_out, 16, dtype=torch.bfloat16)
    folder = root / "full-size"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(save(tensors))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 32}))
    times = []
    for _ in range(3):
        t = time.perf_counter()
        config, data = read_adapter(FileStorage(str(root)), str(folder))
        load_lora(config, data, 0, 24, torch.bfloat16, torch.device("cpu"))
        times.append(time.perf_counter() - t)
    return {"bytes": len(data), "read_and_parse_s": round(statistics.median(times), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rounds, shorter outputs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on this 2-core machine)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        path = make_model(Path(d) / "model")
        out = asyncio.run(run(path, Path(d), 24 if args.quick else 64, 3 if args.quick else 5))
        out["gpt_oss_20b_shape_rank16"] = full_size_load(Path(d))
    out["torch_threads"] = torch.get_num_threads()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
