"""A replica's cold start on the real path, phase by phase: from the autoscaling decision to its first token.

One request waits in a model's Redis queue; the bench then asks Ray Serve for the model's first replica
(the decision) and reads the replica's own marks (ossfleet/replica/cold_start.py) once the request's first
token is out: Ray placing the replica and starting its process, the imports, the tokenizer, the weights
(ossfleet's engine reads them when it is built), the engine's start (its KV cache; vLLM's start is weights,
KV cache and warm-up together), the first pull, the first token. The checkpoint is a tiny one in the
released layout (4 layers, hidden 256, head_dim 64: the shape vLLM's CPU build takes), so the weights are
a few megabytes: what this measures is everything but their bytes, which ``PlatformConfig.cold_start_s``
adds for a real model from its size and the storage and PCIe bandwidths.

``--engine batched`` (ossfleet's engine, this venv) or ``--engine vllm`` (run it with the vLLM venv's
python). ``--preload``: imports done before the replica is asked for (Ray's worker setup hook,
``deployments.preload``, runs in every idle worker Ray starts ahead, so the replica's process has
them). The last line is one JSON object: ``phases`` (seconds), ``marks``, ``engine``, ``preload``.

    python bench/cold_start.py --quick --engine batched
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
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "gpt-oss-20b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(ckpt: Path, engine: str, namespace: str) -> dict[str, Any]:
    model: dict[str, Any] = {"name": MODEL, "spec": "gpt-oss-20b", "path": str(ckpt), "engine": engine,
                             "max_batch_size": 4, "max_context": 512, "num_gpus": 0, "num_cpus": 1,
                             "dtype": "float32", "replicas": {"min": 1, "max": 1, "initial": 1}}  # fmt: skip
    if engine == "vllm":
        model["vllm"] = {"kv_cache_gib": 1, "prefix_caching": False, "headroom_slots": 0}
    return {"redis": {"namespace": namespace, "lease_s": 30}, "models": [model],
            "endpoints": {"http_port": free_port(), "ingress": "proxy"}}  # fmt: skip


async def enqueue_one(cfg: Any, url: str) -> None:
    from ossfleet.control.admission import Admission
    from ossfleet.control.queue import queue_for
    from ossfleet.protocol.work import WorkItem
    from ossfleet.redisdb import connect_async

    client = connect_async(url)
    q = queue_for(cfg, client)
    prompt = list(range(10, 40))  # 30 token ids: vLLM's CPU build needs more than a few
    item = WorkItem(prompt, 4, temperature=0, ignore_eos=True, raw=True)
    await q.admit(Admission("cold", "t", MODEL, 1, item, len(prompt), 4, 100, 10**12, "p", 10**6, 10**9))
    await client.aclose()


def measure(engine: str, preload: bool, timeout_s: float) -> dict[str, Any]:
    import ray
    from ray import serve

    from deployments.app import build_applications, deploy
    from ossfleet.config import parse_config
    from ossfleet.redisdb import EmbeddedRedis, connect
    from ossfleet.replica.cold_start import phases
    from ossfleet.serveconfig import serve_start_options
    from ossfleet.tinymodel import TinySpec, make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as d, EmbeddedRedis(Path(d) / "redis") as redis_server:
        spec = TinySpec(layers=4, hidden_size=256, heads=8, kv_heads=4, head_dim=64, experts=8, experts_per_token=2)
        ckpt = make_tiny_checkpoint(Path(d) / "tiny", spec)
        cfg = parse_config(config(ckpt, engine, "cold"), "<cold-start bench>")
        env: dict[str, Any] = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}}
        if preload:
            env["worker_process_setup_hook"] = "deployments.preload.preload"
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=env)
        try:
            serve.start(**serve_start_options(cfg, local=True, host="127.0.0.1"))
            asyncio.run(enqueue_one(cfg, redis_server.url))
            if preload:  # the idle workers Ray starts ahead have run the hook (imported) before the decision
                time.sleep(20)
            specs = [s for s in build_applications(cfg, redis_server.url) if s.name.startswith("model-")]
            decided_at = time.time()
            assert deploy(specs, timeout_s=timeout_s, report=lambda m: print(m, flush=True))
            r = connect(redis_server.url)
            ks = cfg.redis.namespace
            from ossfleet.control.keyspace import KeySpace

            state_key = KeySpace(ks).req(MODEL, "cold")
            deadline = time.monotonic() + timeout_s
            while (r.hget(state_key, "state") or b"") != b"done":
                assert time.monotonic() < deadline, "the first request was not served"
                time.sleep(0.2)
            handle = serve.get_deployment_handle(f"{MODEL}-replica", specs[0].name)
            stats = handle.stats.remote().result()
            marks = stats["cold_start"]
            return {"engine": engine, "preload": preload, "phases": phases(marks, decided_at),
                    "marks": {k: round(v - decided_at, 3) for k, v in marks.items()}}  # fmt: skip
        finally:
            serve.shutdown()
            ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--engine", choices=("batched", "vllm"), default="batched")
    ap.add_argument("--preload", action="store_true")
    ap.add_argument("--timeout-s", type=float, default=600)
    args = ap.parse_args()
    os.environ.setdefault("RAY_SERVE_ENABLE_ACCESS_LOG", "0")
    print(json.dumps(measure(args.engine, args.preload, args.timeout_s)))


if __name__ == "__main__":
    main()
