"""What engine tests share besides fixtures: running a set of prompts through an engine at once.

(A module of its own, as tests/e2e/e2e_platform.py: test modules importing from ``conftest`` would get
whichever conftest.py was imported first under that name.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ossfleet.engine.base import Engine, EngineRequest, SamplingParams


async def run_prompts(
    engine: Engine, prompts: list[list[int]], params: SamplingParams | Callable[[int], SamplingParams]
) -> list[list[int]]:
    """Start ``engine``, submit every prompt at once (request ``r{i}``, sampled by ``params`` or
    ``params(i)``), stop it; the token ids each request generated, in prompt order."""
    await engine.start()

    async def one(i: int, p: list[int]) -> list[int]:
        sampling = params(i) if callable(params) else params
        return [t async for out in engine.generate(EngineRequest(f"r{i}", p, sampling)) for t in out.token_ids]

    try:
        return await asyncio.gather(*[one(i, p) for i, p in enumerate(prompts)])
    finally:
        await engine.stop()
