"""Checkpoints in the released MXFP4 format: their layout, their loading in both weight formats, and
greedy tokens equal to transformers' own loading and ``generate`` (a real tiny checkpoint, in-process)."""

from __future__ import annotations

import json

import pytest
import torch
from engine_runs import run_prompts
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.integrations.mxfp4 import convert_moe_packed_tensors
from transformers.utils.quantization_config import Mxfp4Config

from ossfleet.catalog import ModelSpec, split_layers
from ossfleet.engine.base import SamplingParams
from ossfleet.engine.batched import local_engine
from ossfleet.engine.mxfp4 import dequantize
from ossfleet.engine.stages import PipelineStage
from ossfleet.tinymodel import MXFP4_QUANTIZATION_CONFIG

# Lengths 3 to 25 with a sliding window of 8: some prompts run past it.
PROMPTS = [list(range(3, 6)), list(range(10, 17)), list(range(20, 33)), list(range(40, 65)), [7, 8, 9, 10, 11]]
GREEDY = SamplingParams(max_tokens=12, temperature=0)


def tensors(path):
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return {n: f.get_tensor(n) for n in f.keys()}  # noqa: SIM118 (safe_open is no dict)


def test_mxfp4_checkpoint_has_the_released_layout(tiny_checkpoint_mxfp4):
    cfg = json.loads((tiny_checkpoint_mxfp4 / "config.json").read_text())
    assert cfg["quantization_config"] == MXFP4_QUANTIZATION_CONFIG
    e, h, i = cfg["num_local_experts"], cfg["hidden_size"], cfg["intermediate_size"]
    t = tensors(tiny_checkpoint_mxfp4)
    for layer in range(cfg["num_hidden_layers"]):
        x = f"model.layers.{layer}.mlp.experts."
        assert t[x + "gate_up_proj_blocks"].shape == (e, 2 * i, h // 32, 16)
        assert t[x + "gate_up_proj_scales"].shape == (e, 2 * i, h // 32)
        assert t[x + "down_proj_blocks"].shape == (e, h, i // 32, 16)
        assert t[x + "down_proj_scales"].shape == (e, h, i // 32)
        assert t[x + "gate_up_proj_bias"].shape == (e, 2 * i) and t[x + "down_proj_bias"].shape == (e, h)
        assert x + "gate_up_proj" not in t and x + "down_proj" not in t
    packed = [n for n in t if n.endswith(("_blocks", "_scales"))]
    assert all(t[n].dtype == torch.uint8 for n in packed)
    assert all(t[n].dtype == torch.bfloat16 for n in t if n not in packed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mxfp4_dequantize_is_bit_exact_with_transformers(tiny_checkpoint_mxfp4, dtype):
    t = tensors(tiny_checkpoint_mxfp4)
    for name in [n for n in t if n.endswith("_blocks")]:
        base = name[: -len("_blocks")]
        ours = dequantize(t[name], t[base + "_scales"], dtype).transpose(1, 2)
        assert torch.equal(ours, convert_moe_packed_tensors(t[name], t[base + "_scales"], dtype=dtype))


@pytest.fixture(scope="module")
def mxfp4_reference(tiny_checkpoint_mxfp4):
    """transformers' own loading of the released format (dequantized on CPU) and its greedy generate."""
    model = AutoModelForCausalLM.from_pretrained(
        tiny_checkpoint_mxfp4, dtype=torch.float32, quantization_config=Mxfp4Config(dequantize=True)
    )
    return [
        model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False)[0, len(p) :].tolist() for p in PROMPTS
    ]


@pytest.mark.parametrize("weights", ["bf16", "mxfp4"])
@pytest.mark.parametrize(
    ("ranges", "micro_batches"), [([(0, 4)], 1), ([(0, 2), (2, 4)], 2)], ids=["1-stage", "2-stages"]
)
async def test_mxfp4_greedy_tokens_equal_generate(tiny_checkpoint_mxfp4, mxfp4_reference, weights, ranges,
                                                 micro_batches):  # fmt: skip
    engine = local_engine(
        str(tiny_checkpoint_mxfp4), ranges, max_batch_size=4, micro_batches=micro_batches, weights=weights
    )
    assert await run_prompts(engine, PROMPTS, GREEDY) == mxfp4_reference


@pytest.mark.parametrize("weights", ["bf16", "mxfp4"])
@pytest.mark.parametrize("stages", [1, 2])
def test_mxfp4_stages_hold_what_the_planner_plans(tiny_checkpoint_mxfp4, weights, stages):
    spec = ModelSpec.from_hf_config(AutoConfig.from_pretrained(tiny_checkpoint_mxfp4))
    split = split_layers(spec.layers, stages)
    planned = spec.stage_bytes(split, weights, dtype_bytes=4)
    start = 0
    for n, plan in zip(split, planned, strict=True):
        held = PipelineStage(tiny_checkpoint_mxfp4, start, start + n, weights=weights).param_bytes()
        start += n
        # Only the last stage's final norm (4 x hidden bytes) is outside the plan.
        assert 0 <= held - plan <= 4 * spec.hidden_size


def test_mxfp4_packed_experts_hold_a_quarter_of_the_dequantized_bytes(tiny_checkpoint_mxfp4):
    packed = PipelineStage(tiny_checkpoint_mxfp4, 1, 3, weights="mxfp4")
    dense = PipelineStage(tiny_checkpoint_mxfp4, 1, 3, weights="bf16", dtype="bfloat16")

    def experts(stage):
        return sum(t.numel() * t.element_size() for layer in stage.layers for t in layer.mlp.experts.buffers()) + sum(
            t.numel() * t.element_size() for layer in stage.layers for t in layer.mlp.experts.parameters()
        )

    # 4.25 bits against 16 a weight, the biases (dtype) aside.
    assert experts(packed) < 0.4 * experts(dense)


def test_mxfp4_weights_refused_for_a_dense_checkpoint(tiny_checkpoint):
    with pytest.raises(ValueError, match=r"not in MXFP4.*use weights: bf16"):
        PipelineStage(tiny_checkpoint, 0, 2, weights="mxfp4")


def test_mxfp4_whole_model_packs_a_built_model_as_the_checkpoint_writer_does(tiny_checkpoint_mxfp4):
    """The GPU benchmark's path: a model built in memory, its experts packed in place. Packing the
    dequantized experts again gives back the checkpoint's own values (MXFP4 round-trips exactly; a
    block may come back with an equivalent scale, so the values are compared, not the bytes)."""
    model = AutoModelForCausalLM.from_pretrained(
        tiny_checkpoint_mxfp4, dtype=torch.float32, quantization_config=Mxfp4Config(dequantize=True)
    )
    stage = PipelineStage.whole_model(model, weights="mxfp4")
    t = tensors(tiny_checkpoint_mxfp4)
    for i, layer in enumerate(stage.layers):
        for proj in ("gate_up_proj", "down_proj"):
            name = f"model.layers.{i}.mlp.experts.{proj}"
            ours = getattr(layer.mlp.experts, f"{proj}_blocks"), getattr(layer.mlp.experts, f"{proj}_scales")
            assert ours[0].dtype == torch.uint8 and ours[0].shape == t[f"{name}_blocks"].shape
            assert torch.equal(
                dequantize(*ours, torch.float32), dequantize(t[f"{name}_blocks"], t[f"{name}_scales"], torch.float32)
            )
