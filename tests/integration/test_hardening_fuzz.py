"""Hardening (#33): random but schema-valid sampling parameters, driven through the real engine, never fail
another request, and never the engine. A seeded fuzz (the same cases every run), so a failure reproduces."""

from __future__ import annotations

import asyncio
import random

from ossfleet.engine.base import EngineRequest, SamplingParams
from ossfleet.engine.batched import local_engine


def random_params(rng: random.Random) -> SamplingParams:
    """What the API's schema admits (temperature 0-2, top_p in (0, 1], top_k >= 0, any 64-bit seed,
    logprobs 0-20), with the edges weighted in: vanishing temperatures, top_p at its floor."""
    temperature = rng.choice([0.0, 1e-300, 1e-45, 1e-6, 1e-5, rng.uniform(0, 2), 2.0])
    top_p = rng.choice([1.0, 1e-300, 1e-9, rng.uniform(1e-6, 1)])
    max_tokens = rng.randint(1, 12)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=rng.choice([0, 1, rng.randint(2, 5000)]),
        seed=rng.choice([None, 0, -(2**63), 2**63 - 1, rng.randint(-(2**63), 2**63 - 1)]),
        min_tokens=rng.randint(0, max_tokens),
        ignore_eos=rng.random() < 0.3,
        logprobs=rng.choice([None, 0, rng.randint(1, 20)]),
    )


async def test_hardening_fuzzed_sampling_parameters_never_fail_another_request(tiny_checkpoint_sw8):
    rng = random.Random(20261205)
    engine = local_engine(str(tiny_checkpoint_sw8), [(0, 4)], max_batch_size=8)
    await engine.start()

    async def run(req: EngineRequest) -> tuple[list[int], str | None, str | None]:
        toks, last = [], None
        async for out in engine.generate(req):
            toks += out.token_ids
            last = out
        assert last is not None and last.finished
        return toks, last.finish_reason, last.error

    try:
        control = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
        alone, _, _ = await run(EngineRequest("control-alone", [5, 6, 7], control))
        for round_ in range(20):
            fuzzed = [random_params(rng) for _ in range(6)]
            results = await asyncio.gather(
                run(EngineRequest(f"control-{round_}", [5, 6, 7], control)),
                *[run(EngineRequest(f"f{round_}-{i}", [rng.randrange(10, 200) for _ in range(rng.randint(1, 20))],
                                    p)) for i, p in enumerate(fuzzed)],
            )  # fmt: skip
            toks, finish, error = results[0]
            assert error is None and finish == "length" and toks == alone, fuzzed  # the control is untouched
            for (out, finish, error), p in zip(results[1:], fuzzed, strict=True):
                assert error is None, (p, error)  # each fuzzed request ends on its own terms
                assert finish in ("stop", "length") and 1 <= len(out) <= p.max_tokens
                if p.ignore_eos:
                    assert len(out) == p.max_tokens
            assert engine.healthy()
    finally:
        await engine.stop()
