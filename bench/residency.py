"""Residency: what a stage holds in memory against what the planner says it holds.

Writes a small checkpoint in the released format (MXFP4 experts, bf16
elsewhere; larger than the test ones so that RSS moves measurably), then, for
each weight format (``bf16``: experts dequantized at load; ``mxfp4``: kept
packed) and for 1 and 2 stages, loads the stages in a fresh process each and
reports per stage:

- ``planned_bytes``: ``catalog.ModelSpec.stage_bytes`` for the checkpoint's
  architecture, format and dtype (bf16, as on a GPU);
- ``tensor_bytes``: the bytes of the stage's own tensors (parameters and
  packed buffers);
- ``rss_growth_bytes``: how much the process's resident memory grew while
  the stage loaded (loading transients and the allocator included);
- ``ratio``: tensor bytes / planned bytes, and ``rss_ratio``: RSS growth /
  planned bytes.

The last line is one JSON object with ``worst_ratio`` (the ratio farthest
from 1; goal within [0.95, 1.05]) and ``worst_rss_ratio`` beside it.

    python bench/residency.py --quick
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # bench/autoscaling.py must not shadow the autoscaling package

import argparse
import json
import multiprocessing as mp
import tempfile
from pathlib import Path
from typing import Any


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def load_stage(path: str, start: int, end: int, weights: str, out: Any) -> None:
    """In a fresh process: import first (so imports are not counted), then load one stage."""
    import gc

    import torch  # noqa: F401
    import transformers.models.gpt_oss.modeling_gpt_oss  # noqa: F401
    from safetensors import safe_open  # noqa: F401
    from transformers import AutoConfig

    from ossfleet.engine.stages import PipelineStage

    AutoConfig.from_pretrained(path)  # its first call imports and caches more of transformers
    gc.collect()
    before = rss_bytes()
    stage = PipelineStage(path, start, end, weights=weights, dtype="bfloat16")
    gc.collect()
    out.put({"tensor_bytes": stage.param_bytes(), "rss_growth_bytes": rss_bytes() - before})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a smaller checkpoint")
    args = ap.parse_args()

    from transformers import AutoConfig

    from ossfleet.catalog import ModelSpec, split_layers
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    hidden = 256 if args.quick else 512
    spec = TinySpec(layers=4, hidden_size=hidden, heads=4, kv_heads=2, head_dim=64, experts=8, mxfp4=True)
    ctx = mp.get_context("spawn")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        path = make_tiny_checkpoint(Path(d) / "mxfp4", spec)
        model = ModelSpec.from_hf_config(AutoConfig.from_pretrained(path), "residency")
        for weights in ("bf16", "mxfp4"):
            for stages in (1, 2):
                split = split_layers(model.layers, stages)
                planned = model.stage_bytes(split, weights, dtype_bytes=2)
                start = 0
                for i, (n, plan) in enumerate(zip(split, planned, strict=True)):
                    q = ctx.Queue()
                    p = ctx.Process(target=load_stage, args=(str(path), start, start + n, weights, q))
                    p.start()
                    got = q.get(timeout=600)
                    p.join()
                    start += n
                    row = {"weights": weights, "stages": stages, "stage": i, "layers": n, "planned_bytes": plan,
                           **got, "ratio": round(got["tensor_bytes"] / plan, 4),
                           "rss_ratio": round(got["rss_growth_bytes"] / plan, 3)}  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    worst = max(rows, key=lambda r: abs(r["ratio"] - 1))
    worst_rss = max(rows, key=lambda r: abs(r["rss_ratio"] - 1))
    print(json.dumps({
        "checkpoint": {"hidden_size": hidden, "layers": spec.layers, "experts": spec.experts, "format": "mxfp4"},
        "worst_ratio": worst["ratio"], "worst_rss_ratio": worst_rss["rss_ratio"],
        "mxfp4_vs_bf16_bytes": round(sum(r["tensor_bytes"] for r in rows if r["weights"] == "mxfp4")
                                     / sum(r["tensor_bytes"] for r in rows if r["weights"] == "bf16"), 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
