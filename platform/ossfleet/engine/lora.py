"""LoRA adapters applied per row, many in one step, never merged into the base weights.

As S-LoRA and Punica do: the base projection runs once over the whole packed
step, then each adapter present in the step adds its low-rank delta
``scale * (x @ A^T) @ B^T`` to the rows (tokens) of its requests only, the
rows gathered per adapter (``index_select`` / ``index_add_``). Rows without
an adapter get the base model's output exactly.

A stage keeps the weights of its own layers only. Its attention projections
are wrapped in :class:`LoraLinear` the first time an adapter loads (a stage
that never serves one runs the plain ``nn.Linear``); the wrappers read the
step's grouping from a :class:`LoraContext` the stage sets before each forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ossfleet.adapters.format import KEY, TARGETS, lora_scale

# (layer within the stage, projection) -> (A [r, in], B pre-scaled [out, r])
AdapterWeights = dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]


def load_lora(
    config: dict[str, Any], data: bytes, start: int, end: int, dtype: torch.dtype, device: torch.device
) -> AdapterWeights:
    """The weights of layers ``[start, end)`` from an adapter's safetensors bytes (validated at upload)."""
    from safetensors.torch import load

    tensors = load(data)
    rank = int(config["r"])
    scale = lora_scale(config, rank)
    pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        m = KEY.fullmatch(name)
        if m is None:
            raise ValueError(f"tensor {name!r} is not a LoRA weight of an attention projection")
        layer = int(m.group(1))
        if start <= layer < end:
            pairs.setdefault((layer - start, m.group(2)), {})[m.group(3)] = t
    out: AdapterWeights = {}
    for key, ab in pairs.items():
        a = ab["A"].to(device, dtype).contiguous()
        # Scaled in float32, then cast: the same rounding as PEFT's merge of scale * B @ A is not
        # reachable anyway (it sums in a different order); greedy tokens are what tests compare.
        b = (ab["B"].float() * scale).to(device, dtype).contiguous()
        out[key] = (a, b)
    return out


@dataclass
class LoraContext:
    """The current step's adapters: each with the packed token indices of its rows."""

    groups: list[tuple[AdapterWeights, torch.Tensor]] = field(default_factory=list)
    whole: AdapterWeights | None = None  # set when one adapter covers every token of the step


class LoraLinear(torch.nn.Module):
    """A projection plus the per-row deltas of the step's adapters."""

    def __init__(self, base: torch.nn.Linear, layer: int, name: str, ctx: LoraContext) -> None:
        super().__init__()
        self.base = base
        self.key = (layer, name)
        self.ctx = ctx

    @property
    def weight(self) -> torch.Tensor:  # what code reading ``q_proj.weight`` (dtype, device) expects
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        ctx = self.ctx
        if ctx.whole is not None:
            ab = ctx.whole.get(self.key)
            if ab is not None:
                a, b = ab
                y = y + (x @ a.T) @ b.T
            return y
        if not ctx.groups:
            return y
        flat_x = x.reshape(-1, x.shape[-1])
        flat_y = y.reshape(-1, y.shape[-1])
        for weights, rows in ctx.groups:
            ab = weights.get(self.key)
            if ab is None:
                continue
            a, b = ab
            flat_y.index_add_(0, rows, (flat_x.index_select(0, rows) @ a.T) @ b.T)
        return flat_y.view(y.shape)


class StageAdapters:
    """A stage's loaded adapters, and the wrapping of its projections that applies them."""

    def __init__(self, layers: torch.nn.ModuleList, start: int, end: int, dtype: torch.dtype, device: torch.device):
        self.layers = layers
        self.start, self.end = start, end
        self.dtype, self.device = dtype, device
        self.loaded: dict[str, AdapterWeights] = {}
        self.ctx = LoraContext()
        self._wrapped = False

    def _wrap(self) -> None:
        for i, layer in enumerate(self.layers):
            attn: Any = layer.self_attn
            for name in TARGETS:
                base = getattr(attn, name)
                if not isinstance(base, LoraLinear):
                    setattr(attn, name, LoraLinear(base, i, name, self.ctx))
        self._wrapped = True

    def add(self, key: str, config: dict[str, Any], data: bytes) -> int:
        """Load an adapter's weights of this stage's layers; returns their bytes."""
        if not self._wrapped:
            self._wrap()
        weights = load_lora(config, data, self.start, self.end, self.dtype, self.device)
        self.loaded[key] = weights
        return sum(t.numel() * t.element_size() for ab in weights.values() for t in ab)

    def remove(self, key: str) -> None:
        self.loaded.pop(key, None)

    def bind(self, adapters: list[str | None], chunks: list[tuple[int, int, int, list[int]]]) -> None:
        """Group the step's tokens by adapter (``adapters`` parallel to ``chunks``) for the wrappers."""
        self.ctx.groups, self.ctx.whole = [], None
        if not any(adapters):
            return
        total = sum(n for _, n, _, _ in chunks)
        rows: dict[str, list[int]] = {}
        for name, (offset, n, _, _) in zip(adapters, chunks, strict=True):
            if name is not None:
                rows.setdefault(name, []).extend(range(offset, offset + n))
        for name, idx in rows.items():
            weights = self.loaded.get(name)
            if weights is None:
                raise RuntimeError(f"adapter {name!r} is not loaded on this stage")
            if len(idx) == total:
                self.ctx.whole = weights
                return
            self.ctx.groups.append((weights, torch.tensor(idx, dtype=torch.long, device=self.device)))
