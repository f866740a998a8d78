"""ossfleet's engine on Llama 3.x, Gemma 2 and Mixtral: greedy tokens equal transformers' ``generate``.

Each family's tiny checkpoint (``ossfleet.tinyfamilies``) runs through the batched engine as one stage and
as a pipeline of two, over prompts longer than Gemma 2's sliding window, with more prompts than slots.
"""

from __future__ import annotations

import pytest
import torch
from engine_runs import run_prompts
from transformers import AutoModelForCausalLM

from ossfleet.engine.base import SamplingParams
from ossfleet.engine.batched import local_engine
from ossfleet.engine.stages import PipelineStage

# Lengths 3, 7, 13 and 25 with a sliding window of 16 (Gemma 2's tiny): some prompts run past it.
PROMPTS = [list(range(3, 6)), list(range(10, 17)), list(range(20, 33)), list(range(40, 65)), [7, 8, 9, 10, 11]]
STEPS = 20


@pytest.fixture(scope="module", params=["llama", "gemma2", "mixtral"])
def family(request, tiny_family_checkpoints):
    path = tiny_family_checkpoints[request.param]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    # Every position attended (generate would otherwise mask a prompt token equal to the pad id).
    reference = [
        model.generate(
            torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), max_new_tokens=STEPS,
            do_sample=False, eos_token_id=None,
        )[0, len(p) :].tolist()
        for p in PROMPTS
    ]  # fmt: skip
    return request.param, path, model, reference


@pytest.mark.parametrize("ranges", [[(0, 2)], [(0, 1), (1, 2)]], ids=["1-stage", "2-stages"])
async def test_greedy_tokens_equal_generate(family, ranges):
    name, path, _, reference = family
    assert len({tuple(r) for r in reference}) == len(reference)  # the prompts' answers differ: a real check
    engine = local_engine(str(path), ranges, max_batch_size=4, micro_batches=len(ranges))
    assert await run_prompts(engine, PROMPTS, SamplingParams(max_tokens=STEPS, temperature=0)) == reference, name


def test_each_stage_holds_only_its_share_of_the_weights(family):
    _, path, model, _ = family
    whole = sum(p.numel() * p.element_size() for p in model.parameters())  # a tied matrix counted once
    one = PipelineStage(path, 0, 2)
    assert one.param_bytes() == whole
    first, last = PipelineStage(path, 0, 1), PipelineStage(path, 1, 2)
    embedding = model.model.embed_tokens.weight
    extra = embedding.numel() * embedding.element_size() if model.config.tie_word_embeddings else 0
    assert first.param_bytes() + last.param_bytes() == whole + extra  # the tied head's copy on the last stage
    assert first.lm_head is None and last.embed is None
