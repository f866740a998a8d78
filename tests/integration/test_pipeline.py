"""The micro-batched engine and pipeline stages on a real tiny gpt-oss checkpoint, in-process."""

from __future__ import annotations

import asyncio

import pytest
import torch
from engine_runs import run_prompts
from transformers import AutoModelForCausalLM

from ossfleet.engine.base import EngineError, EngineRequest, SamplingParams
from ossfleet.engine.batched import local_engine
from ossfleet.engine.stages import PipelineStage

# Lengths 3, 7, 13 and 25 with a sliding window of 8: some prompts run past it.
PROMPTS = [list(range(3, 6)), list(range(10, 17)), list(range(20, 33)), list(range(40, 65)), [7, 8, 9, 10, 11]]
GREEDY = SamplingParams(max_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint_sw8):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_sw8)
    return [
        model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False)[0, len(p) :].tolist() for p in PROMPTS
    ]


@pytest.mark.parametrize(
    ("ranges", "micro_batches"),
    [([(0, 4)], 1), ([(0, 2), (2, 4)], 1), ([(0, 2), (2, 4)], 2), ([(0, 1), (1, 3), (3, 4)], 3)],
    ids=["whole", "2-stages", "2-stages-2-microbatches", "3-stages-3-microbatches"],
)
async def test_greedy_tokens_equal_generate(tiny_checkpoint_sw8, reference, ranges, micro_batches):
    # Five prompts on four slots: rows join, finish and leave their micro-batches.
    engine = local_engine(str(tiny_checkpoint_sw8), ranges, max_batch_size=4, micro_batches=micro_batches)
    assert await run_prompts(engine, PROMPTS, GREEDY) == reference


def test_each_stage_holds_only_its_share_of_the_weights(tiny_checkpoint_sw8):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_sw8)
    whole = sum(p.numel() * p.element_size() for p in model.parameters())
    for ranges in ([(0, 2), (2, 4)], [(0, 1), (1, 3), (3, 4)]):
        sizes = [PipelineStage(tiny_checkpoint_sw8, a, b).param_bytes() for a, b in ranges]
        assert sum(sizes) == whole  # together exactly the model, nothing loaded twice
        assert max(sizes) < 0.75 * whole


def test_stage_outside_the_model_is_refused(tiny_checkpoint_sw8):
    with pytest.raises(ValueError, match="outside the model's 4 layers"):
        PipelineStage(tiny_checkpoint_sw8, 2, 6)


async def test_same_seed_same_tokens_whatever_the_batch(tiny_checkpoint_sw8, reference):
    def seeded(seed):
        return lambda i: SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, top_k=50, seed=seed + i)

    a = await run_prompts(local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=4), PROMPTS, seeded(42))
    b = await run_prompts(local_engine(str(tiny_checkpoint_sw8), [(0, 2), (2, 4)], max_batch_size=2, micro_batches=2),
                          PROMPTS, seeded(42))  # fmt: skip
    c = await run_prompts(local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=4), PROMPTS, seeded(7))
    assert a == b
    assert a != c and a != reference


async def test_abort_frees_the_slot_and_ends_the_stream(tiny_checkpoint_sw8):
    engine = local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=2, max_context=512)
    await engine.start()
    try:
        gen = engine.generate(EngineRequest("long", [1, 2, 3], SamplingParams(max_tokens=300, temperature=0)))
        first = await gen.__anext__()
        assert first.token_ids and engine.free_slots() == 1
        engine.abort("long")
        rest = [o async for o in gen]
        assert rest[-1].finished and rest[-1].finish_reason == "abort"
        assert engine.free_slots() == 2
    finally:
        await engine.stop()


async def test_prompt_beyond_the_context_is_refused_before_compute(tiny_checkpoint_sw8):
    engine = local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=2, max_context=64)
    await engine.start()
    try:
        with pytest.raises(EngineError, match="exceed the model's context"):
            async for _ in engine.generate(EngineRequest("big", list(range(60)), SamplingParams(max_tokens=10))):
                pass
        assert engine.free_slots() == 2 and engine.stats().running == 0
    finally:
        await engine.stop()


async def test_whole_model_stage_matches_generate(tiny_checkpoint_sw8, reference):
    from ossfleet.engine.batched import BatchedEngine
    from ossfleet.engine.executors import LocalExecutor

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_sw8).eval()
    engine = BatchedEngine(LocalExecutor([PipelineStage.whole_model(model)]), max_batch_size=4)
    assert await run_prompts(engine, PROMPTS, GREEDY) == reference


async def test_stats_report_running_rows_and_kv_use(tiny_checkpoint_sw8):
    engine = local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=2, max_context=512)
    await engine.start()
    try:
        gen = engine.generate(EngineRequest("s", list(range(10, 30)), SamplingParams(max_tokens=100, temperature=0)))
        await gen.__anext__()
        s = engine.stats()
        assert s.running == 1 and s.free_slots == 1
        held = s.kv_cache_used * 2 * 512  # tokens in whole 16-token blocks, not slots x context
        assert held % 16 == 0 and 32 <= held <= 16 * 8, held
        engine.abort("s")
        _ = [o async for o in gen]
    finally:
        await engine.stop()


async def test_greedy_tokens_equal_generate_for_requests_joining_mid_way_in_small_prefill_chunks(
    tiny_checkpoint_sw8, reference
):
    # The long-running request starts alone; the others join once it has produced tokens, and every
    # prompt is prefilled 4 tokens at a time, so decode and prefill chunks share steps.
    engine = local_engine(str(tiny_checkpoint_sw8), [(0, 2), (2, 4)], max_batch_size=8, max_prefill_chunk=4)
    await engine.start()
    try:
        first = engine.generate(EngineRequest("r0", PROMPTS[0], GREEDY))
        toks = [(await first.__anext__()).token_ids[0], (await first.__anext__()).token_ids[0]]

        async def one(i, p):
            return [t async for out in engine.generate(EngineRequest(f"r{i}", p, GREEDY)) for t in out.token_ids]

        others = asyncio.gather(*[one(i, p) for i, p in enumerate(PROMPTS) if i > 0])
        toks += [t async for out in first for t in out.token_ids]
        assert [toks, *await others] == reference
        assert engine.steps > 12  # they shared steps rather than running one after another
    finally:
        await engine.stop()


async def test_preempted_greedy_rows_complete_with_exactly_the_tokens_they_would_have_had(
    tiny_checkpoint_sw8, reference
):
    # 64 tokens of KV (4 blocks): batch-band rows fill it, an interactive request preempts them.
    engine = local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=8, kv_cache_tokens=64)
    await engine.start()
    order: list[str] = []
    generating = asyncio.Event()
    try:

        async def one(i, p, band):
            toks = []
            async for out in engine.generate(EngineRequest(f"r{i}", p, GREEDY, priority=band)):
                toks += out.token_ids
                order.append(f"r{i}")
                generating.set()
            return toks

        batch = [asyncio.create_task(one(i, p, 2)) for i, p in enumerate(PROMPTS) if i != 3]
        await generating.wait()  # the batch rows are generating
        chat = await one(3, PROMPTS[3], 0)
        results = await asyncio.gather(*batch)
        assert [*results[:3], chat, results[3]] == reference
        assert engine.scheduler.preemptions > 0
        assert engine.stats().kv_cache_used == 0
    finally:
        await engine.stop()


async def test_a_stage_failure_fails_its_requests_with_the_error_and_marks_the_engine_unhealthy(tiny_checkpoint_sw8):
    from ossfleet.engine.batched import BatchedEngine
    from ossfleet.engine.executors import LocalExecutor

    class FailsOnThirdStep:  # a real stage whose device goes away mid-request
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def init_cache(self, *a):
            return self.inner.init_cache(*a)

        def forward(self, step, x=None):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("device lost")
            return self.inner.forward(step, x)

    engine = BatchedEngine(
        LocalExecutor([FailsOnThirdStep(PipelineStage(tiny_checkpoint_sw8, 0, 4))]), max_batch_size=2
    )
    await engine.start()
    try:
        outs = [o async for o in engine.generate(EngineRequest("r", PROMPTS[1], GREEDY))]
        assert [len(o.token_ids) for o in outs] == [1, 1, 0]
        assert outs[-1].finished and outs[-1].error == "RuntimeError: device lost"
        assert not engine.healthy() and engine.free_slots() == 2
        with pytest.raises(EngineError, match="device lost"):
            async for _ in engine.generate(EngineRequest("next", PROMPTS[0], GREEDY)):
                pass
    finally:
        await engine.stop()
