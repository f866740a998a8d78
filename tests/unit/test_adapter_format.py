"""What an uploaded LoRA adapter must be, checked from its files alone (no torch at the gateway)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save

from ossfleet.adapters.format import AdapterInvalid, ModelShape, lora_scale, validate

SHAPE = ModelShape(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16)
CONFIG = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "bias": "none", "use_dora": False,
          "base_model_name_or_path": "openai/gpt-oss-20b", "target_modules": ["q_proj", "v_proj"]}  # fmt: skip


REFUSALS = [
    "dora",
    "ia3",
    "bias",
    "experts",
    "modules_to_save",
    "rank_pattern",
    "other-base",
    "rank",
    "shape",
    "layer",
    "lm_head",
    "dtype",
    "size",
    "garbage",
    "empty",
]


def weights(rank=4, layers=(0, 1), modules=("q_proj", "v_proj"), extra=None, dtype=torch.float32):
    t = {}
    for la in layers:
        for mo in modules:
            fan_in, fan_out = SHAPE.dims(mo)
            pre = f"base_model.model.model.layers.{la}.self_attn.{mo}"
            t[f"{pre}.lora_A.weight"] = torch.zeros(rank, fan_in, dtype=dtype)
            t[f"{pre}.lora_B.weight"] = torch.zeros(fan_out, rank, dtype=dtype)
    t.update(extra or {})
    return save(t)


def check(config=None, data=None, **kw):
    kw = {"max_rank": 64, "max_bytes": 10**7, "base_names": ("gpt-oss-20b",), **kw}
    return validate(json.dumps(config or CONFIG).encode(), data if data is not None else weights(), SHAPE, **kw)


def test_a_plain_lora_adapter_on_attention_projections_is_accepted():
    info = check()
    assert (info.rank, info.alpha, info.scale) == (4, 8.0, 2.0)
    assert info.modules == ("q_proj", "v_proj") and info.layers == (0, 1)
    assert lora_scale({**CONFIG, "use_rslora": True}, 4) == 4.0  # alpha / sqrt(r)
    assert check(data=weights(dtype=torch.bfloat16)).rank == 4


@pytest.mark.parametrize(
    ("config", "data", "kw", "reason"),
    [
        ({**CONFIG, "use_dora": True}, None, {}, "DoRA"),
        ({**CONFIG, "peft_type": "IA3"}, None, {}, "only LoRA"),
        ({**CONFIG, "bias": "all"}, None, {}, "biases"),
        ({**CONFIG, "target_parameters": ["mlp.experts.gate_up_proj"]}, None, {}, "target_parameters"),
        ({**CONFIG, "modules_to_save": ["lm_head"]}, None, {}, "modules_to_save"),
        ({**CONFIG, "rank_pattern": {"q_proj": 8}}, None, {}, "rank_pattern"),
        ({**CONFIG, "base_model_name_or_path": "meta-llama/Llama-3.1-8B"}, None, {}, "trained on"),
        ({**CONFIG, "r": 128}, weights(rank=128), {}, "outside what this model serves"),
        (None, weights(rank=8), {}, "expected"),  # shapes of rank 8, config says 4
        (None, weights(layers=(0, 5)), {}, "the model has 2 layers"),
        (None, weights(extra={"base_model.model.lm_head.lora_A.weight": torch.zeros(4, 64)}), {}, "attention"),
        (None, weights(dtype=torch.int8), {}, "use float32"),
        (None, weights(), {"max_bytes": 100}, "more than this model's limit"),
        (None, b"not a safetensors file", {}, "not a safetensors file"),
        (None, save({}), {}, "no LoRA weights"),
    ],
    ids=REFUSALS,
)
def test_an_adapter_the_engine_cannot_serve_is_refused_with_its_reason(config, data, kw, reason):
    with pytest.raises(AdapterInvalid, match=reason):
        check(config, data, **kw)


def test_unpaired_lora_weights_are_refused():
    half = weights(extra={"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight": torch.zeros(4, 64)})
    with pytest.raises(AdapterInvalid, match="unpaired: layer 0 k_proj"):
        check(data=half)


def test_a_config_that_is_not_json_names_its_file():
    with pytest.raises(AdapterInvalid, match="not JSON") as e:
        validate(b"{", weights(), SHAPE, max_rank=8, max_bytes=10**7)
    assert e.value.param == "adapter_config.json"


def _header_swapped(data: bytes, edit) -> bytes:
    """The same safetensors file with its header edited by ``edit`` (padded to the same length)."""
    import struct

    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    raw = json.dumps(header, separators=(",", ":")).encode()
    assert len(raw) <= n
    return data[:8] + raw.ljust(n) + data[8 + n :]


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({**CONFIG, "r": "4"}, "rank r='4'"),
        ({**CONFIG, "r": 4.5}, "rank r=4.5"),
        ({**CONFIG, "r": True}, "rank r=True"),
        ({**CONFIG, "lora_alpha": "8"}, "lora_alpha='8'"),
        ({**CONFIG, "lora_alpha": -1}, "lora_alpha=-1"),
        ({**CONFIG, "lora_alpha": 1e300}, "lora_alpha=1e\\+300"),
        ({**CONFIG, "use_rslora": "yes"}, "use_rslora='yes'"),
    ],
)
def test_hardening_adapter_config_numbers_are_checked_where_they_enter(config, match):
    """#33 finding 8: non-numeric or NaN r / lora_alpha were 500s, and a NaN-alpha adapter was stored."""
    with pytest.raises(AdapterInvalid, match=match) as e:
        check(config)
    assert e.value.param == "adapter_config.json"


def test_hardening_adapter_config_nan_deep_json_and_non_finite_weights_are_refused():
    for raw in (b'{"peft_type": "LORA", "r": 4, "lora_alpha": NaN}', b'{"r": Infinity}', b"[" * 100_000):
        with pytest.raises(AdapterInvalid) as e:
            validate(raw, weights(), SHAPE, max_rank=64, max_bytes=10**7)
        assert e.value.param == "adapter_config.json"
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for value in (float("nan"), float("inf")):
            fan_in, _ = SHAPE.dims("q_proj")
            poisoned = weights(dtype=dtype, modules=("q_proj",), extra={
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":
                    torch.full((4, fan_in), value, dtype=dtype)})  # fmt: skip
            with pytest.raises(AdapterInvalid, match="holds NaN or infinite values"):
                check(data=poisoned)


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h[next(iter(h))].update(data_offsets=[0, 8]),  # not the bytes its shape takes
        lambda h: h[next(iter(h))].update(data_offsets=[0]),
        lambda h: h[next(iter(h))].update(data_offsets=["0", "8"]),
        lambda h: h[next(iter(h))].update(shape="4x64"),
        lambda h: h[next(iter(h))].update(shape=[-4, 64]),
        lambda h: h[next(iter(h))].update(dtype=["F32"]),
    ],
)
def test_hardening_safetensors_offsets_shapes_and_dtypes_that_do_not_agree_are_refused(edit):
    """#33 finding 8: data_offsets that did not match the shapes were accepted, then failed when used."""
    with pytest.raises(AdapterInvalid):
        check(data=_header_swapped(weights(), edit))
