"""Hardening (#33, finding 1): one request can never fail the engine step of everyone else.

A temperature of 1e-300 overflowed the logits to inf and made torch.multinomial raise inside the step
loop; an adapter with NaN weights gave NaN logits. Both failed every request on the replica.
"""

from __future__ import annotations

import asyncio
import json

import torch
from safetensors.torch import load, save

from ossfleet.engine.base import EngineRequest, SamplingParams
from ossfleet.engine.batched import NOT_A_DISTRIBUTION, local_engine
from ossfleet.protocol.work import WorkItem


async def _run(engine, request):
    toks, last = [], None
    async for out in engine.generate(request):
        toks += out.token_ids
        last = out
    return toks, last


async def test_hardening_a_vanishing_temperature_samples_greedily_and_fails_no_one(tiny_checkpoint_sw8):
    engine = local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=4)
    await engine.start()
    try:
        prompt = list(range(10, 20))
        greedy, tiny, other = await asyncio.gather(
            _run(engine, EngineRequest("g", prompt, SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))),
            _run(engine, EngineRequest("t", prompt, SamplingParams(max_tokens=8, temperature=1e-300,
                                                                   ignore_eos=True, logprobs=2))),
            _run(engine, EngineRequest("o", [5, 6, 7], SamplingParams(max_tokens=8, seed=1, ignore_eos=True))),
        )  # fmt: skip
        assert tiny[0] == greedy[0]  # below 1e-5 a temperature is greedy (as vLLM's)
        for toks, last in (greedy, tiny, other):
            assert last.error is None and last.finish_reason == "length" and len(toks) == 8
        assert engine.healthy()
    finally:
        await engine.stop()


async def test_hardening_nan_adapter_fails_its_request_alone_and_the_engine_serves_on(tiny_checkpoint_sw8, tmp_path):
    from ossfleet.tinymodel import make_tiny_adapter

    folder = make_tiny_adapter(tiny_checkpoint_sw8, tmp_path / "nan", seed=1)
    config = json.loads((folder / "adapter_config.json").read_text())
    tensors = load((folder / "adapter_model.safetensors").read_bytes())
    poisoned = save({k: torch.full_like(v, float("nan")) for k, v in tensors.items()})
    engine = local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=4)
    await engine.start()
    try:
        await engine.load_adapter("nan", config, poisoned)
        bad, good = await asyncio.gather(
            _run(engine, EngineRequest("bad", [1, 2, 3], SamplingParams(max_tokens=6, seed=2), adapter="nan")),
            _run(engine, EngineRequest("good", [1, 2, 3], SamplingParams(max_tokens=6, seed=2, ignore_eos=True))),
        )
        assert bad[1].finished and bad[1].error == NOT_A_DISTRIBUTION
        assert good[1].error is None and len(good[0]) == 6
        assert engine.healthy()
        after, last = await _run(engine, EngineRequest("after", [4, 5], SamplingParams(max_tokens=4, ignore_eos=True)))
        assert last.error is None and len(after) == 4
    finally:
        await engine.stop()


class _DeadEndAfter:
    """A grammar (engine TokenConstraint) that allows any token for ``n`` steps and then none: the state a hostile
    schema can reach when the vocabulary cannot spell what it demands."""

    def __init__(self, vocab: int, n: int) -> None:
        self.vocab, self.left = vocab, n

    def allowed(self) -> torch.Tensor:
        return torch.full((self.vocab,), self.left > 0, dtype=torch.bool)

    def consume(self, token_id: int) -> bool:
        self.left -= 1
        return True


async def test_hardening_grammar_dead_end_fails_that_request_as_refused_and_no_other(tiny_checkpoint_sw8):
    from transformers import AutoTokenizer

    from ossfleet.engine.base import GRAMMAR_DEAD_END, EngineRefused
    from ossfleet.replica.generation import Generation

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint_sw8))
    engine = local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=4)
    await engine.start()
    try:
        vocab = json.loads((tiny_checkpoint_sw8 / "config.json").read_text())["vocab_size"]
        dead = _DeadEndAfter(vocab, 3)
        gen = Generation(tok, "dead", WorkItem([1, 2, 3], 8, seed=1, ignore_eos=True, raw=True), constraint=dead)

        async def through_generation():
            async for _ in gen.run(engine):
                pass

        outcome, good = await asyncio.gather(
            through_generation(),
            _run(engine, EngineRequest("good", [1, 2, 3], SamplingParams(max_tokens=8, seed=1, ignore_eos=True))),
            return_exceptions=True,
        )
        # The dead end is the request's (400, no retry on another replica), and the other request is untouched.
        assert isinstance(outcome, EngineRefused) and str(outcome) == GRAMMAR_DEAD_END and outcome.status == 400
        toks, last = good
        assert last.error is None and len(toks) == 8
        assert engine.healthy()
    finally:
        await engine.stop()
