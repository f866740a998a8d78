"""Choosing the next token: greedy, or temperature / top-k / top-p sampling with a per-request seed.

Each request draws from its own ``torch.Generator``, seeded from its ``seed``
(or from the OS when it has none), so the same request with the same seed
gives the same tokens whatever else shares its batch.
"""

from __future__ import annotations

import os

import torch

from ossfleet.engine.base import SamplingParams, TokenLogprob

# Temperatures below this sample greedily (vLLM's threshold too): dividing logits by 1e-300 overflows
# them to inf, and a softmax of infs is NaN, which no sampler can draw from.
GREEDY_BELOW = 1e-5


def greedy(p: SamplingParams) -> bool:
    return p.temperature < GREEDY_BELOW


def drawable(logits: torch.Tensor) -> torch.Tensor:
    """Per row of ``[B, V]`` logits: whether it is a distribution a token can be drawn from (no NaN, at
    least one finite score). A row that is not (a poisoned adapter's NaN weights, say) fails its request
    alone, never the step."""
    return ~torch.isnan(logits).any(dim=-1) & torch.isfinite(logits).any(dim=-1)


def generator_for(params: SamplingParams) -> torch.Generator:
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
    return torch.Generator().manual_seed(seed)


def sample_row(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator) -> int:
    """One token from one row of logits ``[V]``."""
    if greedy(p):
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
        drop[0] = False  # a top_p that rounds to 0 in float32 (1e-300) would drop them all
        scores = scores.scatter(0, order, sorted_scores.masked_fill(drop, float("-inf")))
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=gen))


def constrain(
    logits: torch.Tensor,
    banned: list[tuple[int, ...]] | None = None,
    allowed: list[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """``logits`` ``[B, V]`` with the tokens each row may not take at -inf (a copy where anything changes).

    ``banned[i]`` lists token ids row i may not take; ``allowed[i]`` is a bool mask over the first
    ``len(allowed[i])`` ids (a grammar's, over the tokenizer's vocabulary): every other id, including the
    model's padding ids past the tokenizer's, is refused.
    """
    if not (banned and any(banned)) and not (allowed and any(a is not None for a in allowed)):
        return logits
    logits = logits.clone()
    for i, ids in enumerate(banned or ()):
        if ids:
            logits[i, list(ids)] = float("-inf")
    for i, mask in enumerate(allowed or ()):
        if mask is not None:
            n = min(int(mask.numel()), logits.shape[1])
            logits[i, :n].masked_fill_(~mask[:n].to(logits.device), float("-inf"))
            logits[i, n:] = float("-inf")
    return logits


def sample(
    logits: torch.Tensor,
    params: list[SamplingParams],
    gens: list[torch.Generator],
    banned: list[tuple[int, ...]] | None = None,
    allowed: list[torch.Tensor | None] | None = None,
) -> list[int]:
    """The next token of every row of ``logits`` ``[B, V]``, within what :func:`constrain` leaves."""
    logits = constrain(logits, banned, allowed)
    if all(greedy(p) for p in params):
        return [int(t) for t in torch.argmax(logits, dim=-1)]
    return [sample_row(logits[i], p, g) for i, (p, g) in enumerate(zip(params, gens, strict=True))]


def token_logprob(logits: torch.Tensor, p: SamplingParams, token: int) -> TokenLogprob:
    """The log-probability of ``token`` in one row ``[V]`` of constrained logits, and the top
    ``p.logprobs`` alternatives', from the distribution after temperature (greedy: temperature 1)."""
    scores = logits.float() / (1.0 if greedy(p) else p.temperature)
    lp = torch.log_softmax(scores, dim=-1)
    top: tuple[tuple[int, float], ...] = ()
    if p.logprobs:
        values, ids = torch.topk(lp, min(p.logprobs, lp.numel()))
        top = tuple((int(i), float(v)) for i, v in zip(ids, values, strict=True) if v > float("-inf"))
    return TokenLogprob(token, float(lp[token]), top)
