"""Choosing the next token: greedy, or temperature / top-k / top-p sampling with a per-request seed.

Each request draws from its own ``torch.Generator``, seeded from its ``seed``
(or from the OS when it has none), so the same request with the same seed
gives the same tokens whatever else shares its batch.
"""

from __future__ import annotations

import os

import torch

from ossfleet.engine.base import SamplingParams


def generator_for(params: SamplingParams) -> torch.Generator:
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
    return torch.Generator().manual_seed(seed)


def sample_row(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator) -> int:
    """One token from one row of logits ``[V]``."""
    if p.temperature == 0:
        return int(torch.argmax(logits))
    scores = logits.float() / p.temperature
    if p.top_k and p.top_k < scores.numel():
        kth = torch.topk(scores, p.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # Drop tokens once the mass before them already reaches top_p (the first always stays).
        drop = probs.cumsum(-1) - probs >= p.top_p
        scores = scores.scatter(0, order, sorted_scores.masked_fill(drop, float("-inf")))
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))


def sample(
    logits: torch.Tensor,
    params: list[SamplingParams],
    gens: list[torch.Generator],
    banned: list[tuple[int, ...]] | None = None,
) -> list[int]:
    """The next token of every row of ``logits`` ``[B, V]``; ``banned[i]`` lists tokens row i may not take."""
    if banned and any(banned):
        logits = logits.clone()
        for i, ids in enumerate(banned):
            if ids:
                logits[i, list(ids)] = float("-inf")
    if all(p.temperature == 0 for p in params):
        return [int(t) for t in torch.argmax(logits, dim=-1)]
    return [sample_row(logits[i], p, g) for i, (p, g) in enumerate(zip(params, gens, strict=True))]
