"""PEFT LoRA adapters as tenants upload them: what the files must hold, checked without torch.

An adapter is PEFT's two files, ``adapter_config.json`` and
``adapter_model.safetensors``. The gateway validates an upload here, from the
safetensors header alone (no tensor is read), against the shape of the model
it is for; the engine (``engine/lora.py``) reads the tensors of the same
files. What the engine applies, and so what an upload may contain:

- LoRA (``peft_type: LORA``) on the attention projections ``q_proj``,
  ``k_proj``, ``v_proj``, ``o_proj`` of any layers (PEFT's ``all-linear`` on
  gpt-oss resolves to exactly these: the router and the fused experts are not
  ``nn.Linear``);
- one rank and one alpha for all of them; ``use_rslora`` is honoured
  (scale ``alpha / sqrt(r)`` instead of ``alpha / r``);
- float32, bfloat16 or float16 tensors.

Refused, each with its reason: DoRA, biases, ``target_parameters`` (the
experts), ``modules_to_save`` (whole copied modules), per-module rank or alpha
patterns, layer replication, trainable tokens, and any tensor name or shape
the model does not have.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
KEY = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|o_proj)\.lora_(A|B)\.weight$"
)
DTYPES = {"F32": 4, "BF16": 2, "F16": 2}
# Options PEFT writes whose non-empty value changes the computation in a way the engine does not follow.
_UNSUPPORTED = {
    "use_dora": "DoRA adapters (use_dora)",
    "target_parameters": "adapters on parameters (target_parameters, e.g. the MoE experts)",
    "modules_to_save": "fully trained module copies (modules_to_save)",
    "rank_pattern": "per-module ranks (rank_pattern)",
    "alpha_pattern": "per-module alphas (alpha_pattern)",
    "layer_replication": "layer replication",
    "trainable_token_indices": "trainable token embeddings (trainable_token_indices)",
    "lora_bias": "LoRA biases (lora_bias)",
    "fan_in_fan_out": "fan_in_fan_out weights",
}


class AdapterInvalid(ValueError):
    """An adapter the engine cannot serve; the message says why (and ``param`` which file)."""

    def __init__(self, message: str, param: str = WEIGHTS_FILE) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a model that an adapter's tensors must match."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config: dict[str, Any]) -> ModelShape:
        """From a checkpoint's ``config.json``."""
        heads = int(config["num_attention_heads"])
        return cls(
            layers=int(config["num_hidden_layers"]),
            hidden=int(config["hidden_size"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
        )

    def dims(self, module: str) -> tuple[int, int]:
        """(in, out) features of a projection."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                "o_proj": (q, self.hidden)}[module]  # fmt: skip


@dataclass(frozen=True)
class AdapterInfo:
    """What validation learned about an adapter."""

    rank: int
    alpha: float
    scale: float  # what the engine multiplies B @ A by
    modules: tuple[str, ...]  # the projections it adapts
    layers: tuple[int, ...]  # the layers it adapts
    nbytes: int  # of the weights file
    base_model: str  # as its config names it


def safetensors_header(data: bytes) -> dict[str, Any]:
    """A safetensors file's header (tensor name -> dtype, shape, offsets), checked against the file's size."""
    if len(data) < 8:
        raise AdapterInvalid(f"{WEIGHTS_FILE} is not a safetensors file (it has {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise AdapterInvalid(f"{WEIGHTS_FILE} is not a safetensors file (its header runs past its end)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AdapterInvalid(f"{WEIGHTS_FILE} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise AdapterInvalid(f"{WEIGHTS_FILE} is not a safetensors file (its header is not an object)")
    header.pop("__metadata__", None)
    body = len(data) - 8 - n
    for name, t in header.items():
        if not isinstance(t, dict) or not {"dtype", "shape", "data_offsets"} <= t.keys():
            raise AdapterInvalid(f"{WEIGHTS_FILE}: tensor {name!r} has no dtype, shape or data_offsets")
        offsets, shape, dtype = t["data_offsets"], t["shape"], t["dtype"]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_whole(x) for x in offsets)):
            raise AdapterInvalid(f"{WEIGHTS_FILE}: tensor {name!r} has data_offsets {offsets!r}, not two whole numbers")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(_whole(x) for x in shape)):
            raise AdapterInvalid(f"{WEIGHTS_FILE}: tensor {name!r} has shape {shape!r}, not a list of whole numbers")
        if not isinstance(dtype, str):
            raise AdapterInvalid(f"{WEIGHTS_FILE}: tensor {name!r} has dtype {dtype!r}, not a name")
        a, b = offsets
        if not 0 <= a <= b <= body:
            raise AdapterInvalid(f"{WEIGHTS_FILE}: tensor {name!r} lies outside the file")
        if dtype in DTYPES and b - a != math.prod(shape) * DTYPES[dtype]:
            raise AdapterInvalid(
                f"{WEIGHTS_FILE}: tensor {name!r} spans {b - a} bytes, but {dtype} of shape {shape} takes "
                f"{math.prod(shape) * DTYPES[dtype]}"
            )
    return header


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**53


# Per dtype: the bits of a value's exponent, all set for infinities and NaNs.
_EXPONENT = {"F32": ("<u4", 0x7F800000), "BF16": ("<u2", 0x7F80), "F16": ("<u2", 0x7C00)}


def non_finite_tensor(data: bytes, header: dict[str, Any]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity (read from the bits, no torch), or None."""
    import numpy as np

    start = 8 + struct.unpack("<Q", data[:8])[0]
    for name, t in header.items():
        kind = _EXPONENT.get(t["dtype"])
        if kind is None:
            continue
        a, b = t["data_offsets"]
        bits = np.frombuffer(data, dtype=kind[0], count=(b - a) // DTYPES[t["dtype"]], offset=start + a)
        if bool(((bits & kind[1]) == kind[1]).any()):
            return name
    return None


def parse_config(data: bytes) -> dict[str, Any]:
    try:
        cfg = json.loads(data, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterInvalid(f"{CONFIG_FILE} is not JSON: {e}", CONFIG_FILE) from None
    except RecursionError:
        raise AdapterInvalid(f"{CONFIG_FILE} is nested too deeply", CONFIG_FILE) from None
    except ValueError as e:  # NaN, Infinity
        raise AdapterInvalid(f"{CONFIG_FILE}: {e}", CONFIG_FILE) from None
    if not isinstance(cfg, dict):
        raise AdapterInvalid(f"{CONFIG_FILE} must be a JSON object", CONFIG_FILE)
    return cfg


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _rank(cfg: dict[str, Any], max_rank: int) -> int:
    r = cfg.get("r", 0)
    if not _whole(r) or not 1 <= r <= max_rank:
        raise AdapterInvalid(f"rank r={r!r} is outside what this model serves (a whole number, 1 to {max_rank})",
                             CONFIG_FILE)  # fmt: skip
    return int(r)


def _alpha(cfg: dict[str, Any]) -> float:
    alpha = cfg.get("lora_alpha", 8)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha <= 1e6:
        raise AdapterInvalid(f"lora_alpha={alpha!r} must be a number above 0 and at most 1e6", CONFIG_FILE)
    return float(alpha)


def lora_scale(config: dict[str, Any], rank: int) -> float:
    """PEFT's scaling of ``B @ A``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    alpha = _alpha(config)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def validate(
    config_bytes: bytes,
    weights: bytes,
    shape: ModelShape,
    *,
    max_rank: int,
    max_bytes: int,
    base_names: tuple[str, ...] = (),
) -> AdapterInfo:
    """Check an uploaded adapter against the model it is for; raises :class:`AdapterInvalid` saying why.

    ``base_names``: names the base model goes by (the served name, the catalog's, the checkpoint's path);
    an adapter whose ``base_model_name_or_path`` names none of them was trained on another model.
    """
    if len(weights) > max_bytes:
        raise AdapterInvalid(f"{WEIGHTS_FILE} has {len(weights)} bytes, more than this model's limit ({max_bytes})")
    cfg = parse_config(config_bytes)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterInvalid(f"only LoRA adapters are served, not {cfg.get('peft_type')!r}", CONFIG_FILE)
    for key, what in _UNSUPPORTED.items():
        if cfg.get(key):
            raise AdapterInvalid(f"{what} are not supported; train a plain LoRA adapter", CONFIG_FILE)
    if cfg.get("bias", "none") != "none":
        raise AdapterInvalid(f"adapters with biases (bias: {cfg['bias']!r}) are not supported; use bias: none",
                             CONFIG_FILE)  # fmt: skip
    base = str(cfg.get("base_model_name_or_path") or "")
    if base and base_names and not any(n.lower() in base.lower() for n in base_names if n):
        raise AdapterInvalid(
            f"the adapter was trained on {base!r}, not on this model ({base_names[0]}); upload it for its own base",
            CONFIG_FILE,
        )
    header = safetensors_header(weights)
    rank = _rank(cfg, max_rank)
    alpha = _alpha(cfg)
    if not isinstance(cfg.get("use_rslora", False), bool):
        raise AdapterInvalid(f"use_rslora={cfg['use_rslora']!r} must be true or false", CONFIG_FILE)
    seen: dict[tuple[int, str], set[str]] = {}
    for name, t in header.items():
        m = KEY.fullmatch(name)
        if m is None:
            raise AdapterInvalid(
                f"tensor {name!r} is not a LoRA weight of an attention projection ({', '.join(TARGETS)}); "
                "only those are served"
            )
        layer, module, ab = int(m.group(1)), m.group(2), m.group(3)
        if layer >= shape.layers:
            raise AdapterInvalid(f"tensor {name!r} adapts layer {layer}, but the model has {shape.layers} layers")
        if t["dtype"] not in DTYPES:
            raise AdapterInvalid(f"tensor {name!r} is {t['dtype']}; use float32, bfloat16 or float16")
        fan_in, fan_out = shape.dims(module)
        want = [rank, fan_in] if ab == "A" else [fan_out, rank]
        if list(t["shape"]) != want:
            raise AdapterInvalid(f"tensor {name!r} has shape {t['shape']}, expected {want} (rank {rank})")
        seen.setdefault((layer, module), set()).add(ab)
    if not seen:
        raise AdapterInvalid(f"{WEIGHTS_FILE} holds no LoRA weights")
    half = sorted(f"layer {la} {mo}" for (la, mo), abs_ in seen.items() if abs_ != {"A", "B"})
    if half:
        raise AdapterInvalid(f"lora_A and lora_B must come in pairs; unpaired: {', '.join(half)}")
    bad = non_finite_tensor(weights, header)
    if bad is not None:
        raise AdapterInvalid(f"tensor {bad!r} holds NaN or infinite values")
    return AdapterInfo(
        rank=rank,
        alpha=alpha,
        scale=lora_scale(cfg, rank),
        modules=tuple(sorted({mo for _, mo in seen}, key=TARGETS.index)),
        layers=tuple(sorted({la for la, _ in seen})),
        nbytes=len(weights),
        base_model=base,
    )
