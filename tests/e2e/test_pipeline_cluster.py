"""gpt-oss as a 2-stage pipeline whose stages sit on different Ray nodes (STRICT_SPREAD)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM

from ossfleet.engine.base import EngineRequest, SamplingParams
from ossfleet.engine.batched import BatchedEngine
from ossfleet.engine.executors import RayExecutor, ray_stage_actors

pytestmark = pytest.mark.slow
PROMPTS = [list(range(3, 6)), list(range(10, 17)), list(range(20, 33)), list(range(40, 65))]


@pytest.fixture(scope="module")
def two_gpu_nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield nodes
    ray.shutdown()
    cluster.shutdown()


def test_two_stages_on_two_nodes_generate_exactly(two_gpu_nodes, tiny_checkpoint_sw8):
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group([{"CPU": 1, "GPU": 1}] * 2, strategy="STRICT_SPREAD")
    ray.get(pg.ready(), timeout=60)
    try:
        actors = ray_stage_actors(str(tiny_checkpoint_sw8), [(0, 2), (2, 4)], pg, num_gpus=1, num_cpus=1)
        nodes = ray.get([a.node_id.remote() for a in actors])
        assert len(set(nodes)) == 2  # one stage per node
        assert ray.get([a.layer_range.remote() for a in actors]) == [(0, 2), (2, 4)]

        async def run():
            engine = BatchedEngine(RayExecutor(actors), max_batch_size=4, micro_batches=2)
            await engine.start()

            async def one(i, p):
                toks = []
                req = EngineRequest(f"r{i}", p, SamplingParams(max_tokens=10, temperature=0))
                async for out in engine.generate(req):
                    toks += out.token_ids
                return toks

            try:
                return await asyncio.gather(*[one(i, p) for i, p in enumerate(PROMPTS)])
            finally:
                await engine.stop()

        got = asyncio.run(run())
        model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_sw8)
        ref = [
            model.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False)[0, len(p) :].tolist() for p in PROMPTS
        ]
        assert got == ref
    finally:
        remove_placement_group(pg)
