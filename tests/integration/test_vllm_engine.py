"""What engine: vllm adds beyond the shared contract (test_engine_contract.py): per-tenant prefix caching,
priorities, refusals of what it does not serve, and its config mapping."""

from __future__ import annotations

import pytest
import pytest_asyncio

from ossfleet.engine.base import EngineError, EngineRequest, SamplingParams

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tiny_checkpoint_wide):
    from ossfleet.engine.vllm import VllmEngine, VllmOptions

    # One sequence at a time (the bands test needs it; the others run one request at a time): one vLLM start
    # for the module.
    e = VllmEngine(
        tiny_checkpoint_wide,
        VllmOptions(dtype="float32", max_slots=1, max_context=1024, kv_cache_gib=1, torch_threads=2),
    )
    await e.start()
    yield e
    await e.stop()


async def first_output(engine, rid, prompt, salt):
    outs = [o async for o in engine.generate(EngineRequest(rid, prompt, SamplingParams(max_tokens=2), (),
                                                           cache_salt=salt))]  # fmt: skip
    return outs[0].cached_tokens


async def test_vllm_prefix_cache_is_shared_within_a_tenant_only(engine):
    system = [10 + (i * 7) % 500 for i in range(300)]  # a shared 300-token system prompt
    assert await first_output(engine, "a1", [*system, 1, 2], "tenant-a") == 0
    # The same tenant reuses the cached blocks; another tenant, with the very same prompt, does not.
    assert await first_output(engine, "a2", [*system, 3, 4], "tenant-a") >= 256
    assert await first_output(engine, "b1", [*system, 3, 4], "tenant-b") == 0
    assert await first_output(engine, "b2", [*system, 5, 6], "tenant-b") >= 256


async def test_vllm_refuses_what_it_does_not_serve_naming_it(engine):
    with pytest.raises(EngineError, match="LoRA adapters are not served by engine 'vllm'"):
        [o async for o in engine.generate(EngineRequest("ad", [1, 2, 3], SamplingParams(max_tokens=2), (),
                                                        adapter="tenant:model:x"))]  # fmt: skip
    with pytest.raises(EngineError, match="vLLM refused the request"):  # ids past the vocabulary
        [o async for o in engine.generate(EngineRequest("oov", [1, 2, 10**6], SamplingParams(max_tokens=2)))]
    assert engine.free_slots() == 1 and engine.healthy()


def test_vllm_engine_args_map_the_model_config():
    from ossfleet.config import parse_config
    from ossfleet.engine.factory import vllm_options
    from ossfleet.engine.vllm import VllmEngine

    cfg = parse_config({"models": [{"name": "m", "spec": "gpt-oss-20b", "path": "/x", "engine": "vllm",
                                    "device": "cpu", "max_batch_size": 12, "max_context": 2048,
                                    "vllm": {"kv_cache_gib": 3, "prefix_caching": False}}]}, "<t>")  # fmt: skip
    args = VllmEngine("/x", vllm_options(cfg.models[0])).engine_args()
    # 12 slots and max(1, 12 // 8) of headroom for tenants with nothing running on the replica.
    assert (args.max_num_seqs, args.max_model_len, args.enable_prefix_caching) == (13, 2048, False)
    assert args.scheduling_policy == "priority" and args.logprobs_mode == "processed_logprobs"
    assert args.enforce_eager and args.dtype == "bfloat16"  # CPU: eager, bf16 (AMX) unless the config says
    assert vllm_options(cfg.models[0]).kv_cache_gib == 3


async def test_vllm_bands_are_priorities_a_lower_band_runs_first(engine):
    """A band maps onto vLLM's priority: with one sequence at a time, of two requests waiting behind a running
    one, the lower band (interactive) runs before the batch-band one that came first."""
    import asyncio

    e = engine
    order: list[str] = []

    async def run(rid: str, band: int, n: int, started: asyncio.Event | None = None) -> None:
        req = EngineRequest(rid, [5, 6, 7, 8], SamplingParams(max_tokens=n, ignore_eos=True), (), priority=band)
        async for out in e.generate(req):
            if started is not None:
                started.set()
            if out.finished:
                order.append(rid)

    running = asyncio.Event()
    first = asyncio.create_task(run("running", 2, 300, running))
    await running.wait()  # it holds vLLM's one sequence
    batch = asyncio.create_task(run("batch", 2, 4))
    while e._scheduler is None or e._scheduler[1] < 1:  # until vLLM's scheduler reports it waiting
        e.stats_seen.clear()
        await asyncio.wait_for(e.stats_seen.wait(), timeout=120)
    assert e._scheduler is not None and e._scheduler[1] == 1 and not first.done()
    interactive = asyncio.create_task(run("interactive", 0, 4))  # then a lower band
    await asyncio.gather(first, batch, interactive)
    assert order == ["running", "interactive", "batch"]
