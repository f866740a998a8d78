"""A stage's paged KV cache and the attention that reads it, for one packed step.

Every layer of a stage holds its keys and values in a pool of
``num_blocks x block_size`` token slots; a request's block table (from the
scheduler's plan) says which blocks hold its positions. A step packs every
request's new tokens into one ``[1, T]`` sequence, so the projections and the
experts run once over all of them; only attention is done per request:

- the decoding requests (one new token each) together, as one ``[B, 1]``
  batch over keys gathered from their blocks;
- each prefill chunk on its own, ``[1, n]`` over its keys.

Sliding-window layers gather only the last ``sliding_window`` positions.
Scores follow transformers' ``eager_attention_forward`` of the layer's family
step for step (gpt-oss's attention sinks, Gemma 2's soft-capping), except that a KV head's query heads share
its keys rather than copies of them; greedy tokens equal ``generate``'s.

Why not transformers' ``PagedAttentionCache`` and its ``paged|eager``
attention: that attention computes one score matrix over the packed step's
every query and key (its cost grows with the square of the step's tokens,
which made transformers' continuous batching slow on CPU), and its cache
builds its own block tables per request, where here the engine's scheduler
owns them and every pipeline stage must agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

ATTENTION_NAME = "ossfleet_paged"


@dataclass(frozen=True)
class StepBatch:
    """One step as every stage receives it: plain lists, cheap to send to a stage actor."""

    token_ids: list[int]  # the packed new tokens, [T]
    positions: list[int]  # their positions in their requests, [T]
    chunks: list[tuple[int, int, int, list[int]]]  # (offset in T, length, first position, block table)
    sample_index: list[int]  # packed indices whose logits are wanted, in order
    adapters: list[str | None] | None = None  # per chunk: the LoRA adapter its request uses (None: the base)


@dataclass
class _Group:
    tokens: torch.Tensor  # packed indices of its queries, [B * q]
    rows: int
    q: int
    slots: torch.Tensor  # [B, L] slot of each key
    mask: torch.Tensor  # [B, 1, q, L] additive


@dataclass
class StepMeta:
    """Index tensors for one step, built once per stage and shared by its layers."""

    slot_mapping: torch.Tensor  # [T]: where each new token's K/V goes
    full: list[_Group]
    sliding: list[_Group]


class PagedKVCache:
    """K and V pools for a stage's layers: ``[num_blocks * block_size, kv_heads, head_dim]`` each."""

    def __init__(
        self,
        layers: int,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        shape = (num_blocks * block_size, kv_heads, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))

    def meta(self, step: StepBatch, sliding_window: int | None, dtype: torch.dtype) -> StepMeta:
        device = self.k[0].device if self.k else torch.device("cpu")
        bs = self.block_size
        slot_parts = []
        for _, n, start, table in step.chunks:
            p = torch.arange(start, start + n)
            t = torch.tensor(table, dtype=torch.long)
            slot_parts.append(t[p // bs] * bs + p % bs)
        slot_mapping = torch.cat(slot_parts) if slot_parts else torch.empty(0, dtype=torch.long)
        decode = [c for c in step.chunks if c[1] == 1]
        prefill = [c for c in step.chunks if c[1] > 1]
        full: list[_Group] = []
        sliding: list[_Group] = []
        for window, out in ((None, full), (sliding_window, sliding)):
            if window is not None and not window:
                continue  # no sliding-window layers (Llama, Mixtral)
            if decode:
                out.append(_group(decode, 1, window, bs, dtype, device))
            for c in prefill:
                out.append(_group([c], c[1], window, bs, dtype, device))
        return StepMeta(slot_mapping.to(device), full, sliding)


def _group(
    chunks: list[tuple[int, int, int, list[int]]],
    q: int,
    window: int | None,
    bs: int,
    dtype: torch.dtype,
    device: torch.device,
) -> _Group:
    """Keys and masks for requests that each bring ``q`` new tokens."""
    starts = torch.tensor([c[2] for c in chunks], dtype=torch.long)  # first new position per row
    last = starts + q - 1
    lo = torch.zeros_like(starts) if window is None else (starts - window + 1).clamp(min=0)
    span = int((last - lo).max()) + 1
    key_pos = lo[:, None] + torch.arange(span)[None, :]  # [B, L]
    width = max(len(c[3]) for c in chunks)
    tables = torch.tensor([c[3] + [0] * (width - len(c[3])) for c in chunks], dtype=torch.long)
    block = (key_pos // bs).clamp(max=width - 1)
    slots = tables.gather(1, block) * bs + key_pos % bs
    q_pos = starts[:, None] + torch.arange(q)[None, :]  # [B, q]
    ok = key_pos[:, None, :] <= q_pos[:, :, None]  # causal, [B, q, L]
    if window is not None:
        ok &= key_pos[:, None, :] > q_pos[:, :, None] - window
    mask = torch.zeros(ok.shape, dtype=dtype).masked_fill(~ok, torch.finfo(dtype).min)[:, None]
    tokens = torch.cat([torch.arange(c[0], c[0] + q) for c in chunks])
    return _Group(tokens.to(device), len(chunks), q, slots.to(device), mask.to(device))


def paged_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention for a packed step: writes the new K/V into the pool, then attends per group.

    ``query`` is ``[1, H, T, D]``, ``key``/``value`` ``[1, KV, T, D]`` (rotary
    applied); the step's :class:`StepMeta` and the stage's cache arrive in
    ``kwargs`` (``ossfleet_meta``, ``ossfleet_cache``). Returns ``[1, T, H, D]``.
    """
    meta: StepMeta = kwargs["ossfleet_meta"]
    cache: PagedKVCache = kwargs["ossfleet_cache"]
    layer = module.layer_idx
    kpool, vpool = cache.k[layer], cache.v[layer]
    kpool.index_copy_(0, meta.slot_mapping, key[0].transpose(0, 1).to(kpool.dtype))
    vpool.index_copy_(0, meta.slot_mapping, value[0].transpose(0, 1).to(vpool.dtype))
    heads, dim = query.shape[1], query.shape[3]
    out = query.new_empty(1, query.shape[2], heads, dim)
    window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
    groups = meta.sliding if window else meta.full
    sinks, softcap = getattr(module, "sinks", None), kwargs.get("softcap")
    for g in groups:
        q = query[0, :, g.tokens, :].reshape(heads, g.rows, g.q, dim).transpose(0, 1)  # [B, H, q, D]
        k = kpool[g.slots].transpose(1, 2)  # [B, KV, L, D]
        v = vpool[g.slots].transpose(1, 2)
        o = _gqa_attention(q, k, v, g.mask, sinks, scaling, softcap)  # [B, q, H, D]
        out[0, g.tokens] = o.reshape(g.rows * g.q, heads, dim)
    return out, None


def _gqa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    sinks: torch.Tensor | None,
    scaling: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """transformers' ``eager_attention_forward`` of the layer's family, step for step, without copying K/V
    per head.

    The library repeats each KV head for its query heads (a copy of every
    gathered key and value); here each KV head's query heads are folded into
    the query rows instead: ``[B, KV, G*q, D] @ [B, KV, D, L]``, the same dot
    products. gpt-oss: sinks, the max subtraction and the softmax in the
    library's order of operations. Gemma 2: the scores soft-capped before the
    mask, the softmax in float32. Llama and Mixtral: the softmax in float32.
    """
    b, heads, nq, dim = q.shape
    kv = k.shape[1]
    g = heads // kv
    scores = torch.matmul(q.reshape(b, kv, g * nq, dim), k.transpose(2, 3)) * scaling  # [B, KV, G*q, L]
    scores = scores.view(b, heads, nq, -1)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores + mask
    if sinks is None:
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        o = torch.matmul(probs.reshape(b, kv, g * nq, -1), v)
        return o.view(b, heads, nq, dim).transpose(1, 2).contiguous()
    sink = sinks.reshape(1, -1, 1, 1).expand(b, -1, nq, -1)
    combined = torch.cat([scores, sink], dim=-1)
    combined = combined - combined.max(dim=-1, keepdim=True).values
    probs = torch.softmax(combined, dim=-1, dtype=combined.dtype)[..., :-1].to(v.dtype)
    o = torch.matmul(probs.reshape(b, kv, g * nq, -1), v)  # [B, KV, G*q, D]
    return o.view(b, heads, nq, dim).transpose(1, 2).contiguous()


def register() -> None:
    """Make ``ossfleet_paged`` an attention implementation transformers' layers can call."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, paged_attention)
