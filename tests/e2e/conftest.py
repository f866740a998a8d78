"""A whole ossfleet on real Ray Serve (logical GPUs), real embedded Redis and tiny checkpoints."""

from __future__ import annotations

import os

import pytest
from e2e_platform import Platform, free_port, start_platform


def platform_config(ckpt_20b, ckpt_120b, namespace: str, http_port: int, engine: str = "batched") -> dict:
    model = {
        "device": "cpu",
        "max_batch_size": 4,
        "max_context": 512,
        "num_gpus": 1,
        "num_cpus": 0.25,
        "torch_threads": 1,
        "engine": engine,
    }
    return {
        "redis": {"namespace": namespace, "lease_s": 10},
        "endpoints": {"http_host": "127.0.0.1", "http_port": http_port},
        "limits": {"max_tokens": 256, "max_request_bytes": 65536, "max_messages": 64},
        "models": [
            {
                "name": "gpt-oss-20b",
                "spec": "gpt-oss-20b",
                "path": str(ckpt_20b),
                **model,
                "price": {"input_per_1k": 0.001, "output_per_1k": 0.002},
            },
            {
                # gpt-oss-120b as a two-stage pipeline, one stage per node.
                "name": "gpt-oss-120b",
                "spec": "gpt-oss-120b",
                "path": str(ckpt_120b),
                **model,
                "pipeline_stages": 2,
                "placement_strategy": "STRICT_SPREAD",
                "stage_cpus": 0.5,
                "price": {"input_per_1k": 0.003, "output_per_1k": 0.006},
            },
        ],
        "tenants": [
            {"name": "acme", "budget": {"limit_usd": 100}, "max_band": "interactive"},
            {"name": "globex", "budget": {"limit_usd": 100}, "allowed_models": ["gpt-oss-20b"], "max_band": "standard"},
        ],
    }


@pytest.fixture(scope="module")
def ray_cluster(request):
    """A head node and worker nodes with one logical GPU each: three, or a module's ``GPU_NODES`` (with 0, the
    head holds the module's ``HEAD_GPUS`` and a CPU for each: one raylet where nothing needs several nodes)."""
    import ray
    from ray.cluster_utils import Cluster

    # Serve reports a replica that cannot be scheduled after this long (default 30 s).
    os.environ["RAY_SERVE_SLOW_STARTUP_WARNING_S"] = "3"
    os.environ["RAY_SERVE_SLOW_STARTUP_WARNING_PERIOD_S"] = "3"
    nodes = getattr(request.module, "GPU_NODES", 3)
    head_gpus = 0 if nodes else getattr(request.module, "HEAD_GPUS", 3)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2 + head_gpus, "num_gpus": head_gpus})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def platform(request, ray_cluster, tiny_checkpoint, tiny_checkpoint_4l, redis_server, tmp_path_factory) -> Platform:
    # A namespace per test module: one module's tenants' state (usage, adapters) never shows in another's.
    namespace = "e2e-" + request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    raw = platform_config(tiny_checkpoint, tiny_checkpoint_4l, namespace, free_port())
    return start_platform(raw, ray_cluster, redis_server, tmp_path_factory)
