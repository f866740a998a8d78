"""MXFP4, the format OpenAI released gpt-oss's expert weights in, and experts that stay in it.

A weight matrix ``[rows, cols]`` is stored as ``*_blocks`` (uint8
``[rows, cols / 32, 16]``: two e2m1 values per byte, the even column in the
low nibble) and ``*_scales`` (uint8 ``[rows, cols / 32]``: an e8m0 exponent,
biased by 127, shared by 32 values). For gpt-oss's experts ``rows`` is the
output features (``gate_up``: 2 x intermediate, ``down``: hidden), so the
dense matrices transformers multiplies by are their transposes.

- :func:`quantize` turns dense weights into blocks and scales (for tiny
  checkpoints in the released format);
- :func:`dequantize` is bit-exact with transformers'
  ``convert_moe_packed_tensors`` (the same e2m1 values, the same ``ldexp``),
  through a 256-entry table that decodes a whole byte at once;
- :class:`PackedExperts` keeps a layer's experts packed in memory (4.25 bits
  a weight) and dequantizes, on the stage's device, only the experts a step
  routes to, computing what transformers' eager ``GptOssExperts`` does.
"""

from __future__ import annotations

import torch

# e2m1 values by nibble: sign bit 3, then the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6.
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
BLOCK = 32
PROJECTIONS = ("gate_up_proj", "down_proj")


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``[..., rows, cols]`` (``cols`` a multiple of 32) to MXFP4 blocks and scales.

    Each block of 32 takes the smallest power of two that brings its largest
    magnitude within e2m1's 6.0, and each value the nearest e2m1 value.
    """
    *prefix, cols = w.shape
    if cols % BLOCK:
        raise ValueError(f"MXFP4 needs a multiple of {BLOCK} columns, got {cols}")
    x = w.detach().float().reshape(*prefix, cols // BLOCK, BLOCK)
    amax = x.abs().amax(-1)
    exp = torch.ceil(torch.log2(amax.clamp(min=2.0**-126) / 6.0)).clamp(-127, 127)
    scaled = x / torch.exp2(exp)[..., None]
    magnitudes = torch.tensor(FP4_VALUES[:8], device=w.device)
    idx = (scaled.abs()[..., None] - magnitudes).abs().argmin(-1)
    idx = (idx | ((scaled < 0).long() << 3)).to(torch.uint8)
    blocks = idx[..., 0::2] | (idx[..., 1::2] << 4)
    return blocks.contiguous(), (exp + 127).to(torch.uint8)


def _byte_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[256, 2]``: the two e2m1 values (low nibble first) of every byte."""
    lut = torch.tensor(FP4_VALUES, dtype=dtype, device=device)
    b = torch.arange(256, device=device)
    return torch.stack([lut[b & 0x0F], lut[b >> 4]], dim=-1)


def dequantize(
    blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype, table: torch.Tensor | None = None
) -> torch.Tensor:
    """Blocks ``[..., rows, G, 16]`` and scales ``[..., rows, G]`` to dense ``[..., rows, G * 32]``."""
    table = _byte_table(dtype, blocks.device) if table is None else table
    vals = table[blocks.long()].reshape(*blocks.shape[:-1], BLOCK)  # [..., rows, G, 32]
    vals = torch.ldexp(vals, (scales.to(torch.int32) - 127)[..., None].to(dtype))
    return vals.reshape(*blocks.shape[:-2], -1)


class PackedExperts(torch.nn.Module):
    """A layer's experts in MXFP4, the drop-in for transformers' ``GptOssExperts``.

    Buffers carry the checkpoint's own names (``gate_up_proj_blocks``, ...), so
    a stage loads them with ``load_state_dict`` as they are stored.
    """

    def __init__(self, config, dtype: torch.dtype) -> None:
        super().__init__()
        e, h, i = config.num_local_experts, config.hidden_size, config.intermediate_size
        self.num_experts = e
        self.dtype = dtype
        self.alpha = config.swiglu_alpha
        self.limit = config.swiglu_limit
        shapes = {"gate_up_proj": (2 * i, h), "down_proj": (h, i)}
        for name, (rows, cols) in shapes.items():
            self.register_buffer(f"{name}_blocks", torch.empty(e, rows, cols // BLOCK, 16, dtype=torch.uint8))
            self.register_buffer(f"{name}_scales", torch.empty(e, rows, cols // BLOCK, dtype=torch.uint8))
            self.register_buffer(f"{name}_bias", torch.empty(e, rows, dtype=dtype))
        self._table: torch.Tensor | None = None

    @classmethod
    def from_dense(cls, experts: torch.nn.Module, config, dtype: torch.dtype) -> PackedExperts:
        """Quantize a ``GptOssExperts`` in place of loading (benchmarks of randomly built full-size models),
        one expert at a time on the experts' device."""
        self = cls(config, dtype)
        for name in PROJECTIONS:
            dense: torch.Tensor = getattr(experts, name)  # [E, in, out]
            pairs = [quantize(dense[e].t()) for e in range(dense.shape[0])]
            setattr(self, f"{name}_blocks", torch.stack([b for b, _ in pairs]))
            setattr(self, f"{name}_scales", torch.stack([sc for _, sc in pairs]))
            setattr(self, f"{name}_bias", getattr(experts, f"{name}_bias").detach().to(dtype))
        return self

    def _dense(self, name: str, e: int) -> torch.Tensor:
        """Expert ``e``'s matrix as transformers multiplies by it: ``[in, out]``."""
        blocks: torch.Tensor = getattr(self, f"{name}_blocks")
        scales: torch.Tensor = getattr(self, f"{name}_scales")
        if self._table is None or self._table.device != blocks.device:
            self._table = _byte_table(self.dtype, blocks.device)
        return dequantize(blocks[e], scales[e], self.dtype, self._table).t()

    def forward(self, hidden_states: torch.Tensor, router_indices: torch.Tensor, routing_weights: torch.Tensor):
        out = torch.zeros_like(hidden_states)
        with torch.no_grad():
            mask = torch.nn.functional.one_hot(router_indices, num_classes=self.num_experts).permute(2, 1, 0)
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for e in hit[:, 0].tolist():
            top_k_pos, token_idx = torch.where(mask[e])
            state = hidden_states[token_idx]
            gate_up_bias: torch.Tensor = getattr(self, "gate_up_proj_bias")  # noqa: B009 (a buffer: typed here)
            down_bias: torch.Tensor = getattr(self, "down_proj_bias")  # noqa: B009
            gate_up = state @ self._dense("gate_up_proj", e) + gate_up_bias[e]
            gate, up = gate_up[..., ::2], gate_up[..., 1::2]
            gate = gate.clamp(min=None, max=self.limit)
            up = up.clamp(min=-self.limit, max=self.limit)
            glu = gate * torch.sigmoid(gate * self.alpha)
            y = ((up + 1) * glu) @ self._dense("down_proj", e) + down_bias[e]
            out.index_add_(0, token_idx, (y * routing_weights[token_idx, top_k_pos, None]).to(hidden_states.dtype))
        return out
