"""The transformers engine on a real tiny gpt-oss checkpoint."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM

from ossfleet.engine.base import EngineError, EngineRequest, SamplingParams
from ossfleet.engine.hf import TransformersEngine


@pytest.fixture
async def engine(tiny_checkpoint):
    e = TransformersEngine(tiny_checkpoint, max_batch_size=4, max_context=256, torch_threads=1)
    await e.start()
    yield e
    await e.stop()


PROMPTS = [[1, 50, 60, 70], list(range(10, 40)), [5 + 2 * i for i in range(19)], [200, 201]]


async def collect(engine, rid, prompt, n):
    toks, last = [], None
    async for out in engine.generate(EngineRequest(rid, prompt, SamplingParams(max_tokens=n))):
        toks += out.token_ids
        last = out
    return toks, last


async def test_concurrent_requests_match_sequential_generate(engine, tiny_checkpoint):
    results = await asyncio.gather(*[collect(engine, f"r{i}", p, 12) for i, p in enumerate(PROMPTS)])
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    for prompt, (toks, last) in zip(PROMPTS, results, strict=True):
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0][len(prompt) :].tolist()
        # generate stops at EOS too: compare up to its length.
        assert toks == ref
        assert last.finished and last.finish_reason in ("length", "stop")


async def test_abort_frees_the_slot(engine):
    assert engine.free_slots() == 4
    gen = engine.generate(EngineRequest("long", [1, 2, 3], SamplingParams(max_tokens=200)))
    first = await gen.__anext__()
    assert first.token_ids and engine.free_slots() == 3
    engine.abort("long")
    rest = [o async for o in gen]
    assert rest[-1].finished and rest[-1].finish_reason == "abort"
    assert engine.free_slots() == 4


async def test_prompt_beyond_the_context_is_refused_before_compute(engine):
    with pytest.raises(EngineError, match="exceed the model's context"):
        await collect(engine, "big", list(range(250)), 10)
    assert engine.free_slots() == 4
    with pytest.raises(EngineError, match="empty"):
        await collect(engine, "empty", [], 10)


async def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(EngineError, match="no checkpoint"):
        await TransformersEngine(tmp_path / "nothing").start()
