import pytest
from hypothesis import given
from hypothesis import strategies as st

from ossfleet.catalog import CATALOG, GIB, PlanError, split_layers

S20, S120 = CATALOG["gpt-oss-20b"], CATALOG["gpt-oss-120b"]


def test_real_architectures():
    assert (S20.layers, S20.experts, S20.experts_per_token) == (24, 32, 4)
    assert (S120.layers, S120.experts, S120.experts_per_token) == (36, 128, 4)
    for s in (S20, S120):
        assert (s.hidden_size, s.heads, s.kv_heads, s.head_dim) == (2880, 64, 8, 64)
        assert (s.vocab_size, s.context_length, s.sliding_window) == (201_088, 131_072, 128)
    # The published parameter counts and the released checkpoints' sizes, from the architecture.
    assert abs(S20.params - S20.total_params) / S20.total_params < 0.01
    assert abs(S120.params - S120.total_params) / S120.total_params < 0.01
    assert 13.7e9 < S20.checkpoint_bytes < 13.9e9  # 13.8 GB on the hub
    assert 65.2e9 < S120.checkpoint_bytes < 65.4e9  # 65.3 GB


def test_bf16_weights_hold_the_experts_dequantized():
    # What the engine holds with weights: bf16 (experts dequantized): about 42 GB and 234 GB.
    for spec, gb in ((S20, 41.8), (S120, 233.7)):
        held = spec.layers * spec.layer_bytes("bf16") + 2 * spec.embedding_bytes()
        assert abs(held / 1e9 - gb) < 0.1


def test_20b_fits_one_24gb_gpu_only_in_mxfp4():
    assert S20.plan(24, weights="mxfp4").stages == 1
    assert S20.plan(24, weights="bf16").stages == 3
    with pytest.raises(PlanError, match=r"does not fit on 1 GPU\(s\) of 24 GiB: its weights take 39.0 GiB"):
        S20.plan_stages(24, 1, weights="bf16")
    # A shorter context frees the KV cache a 131k-token request needs, but not the weights' 39 GiB.
    assert S20.plan(48, weights="bf16", max_context=32768).stages == 1


def test_120b_on_80gb_is_one_gpu_and_on_48gb_a_two_stage_pipeline():
    assert S120.plan(80).stages == 1
    p = S120.plan(48)
    assert p.stages == 2 and p.layers_per_stage == (18, 18)
    assert [r.start for r in p.layer_ranges()] == [0, 18]
    assert all(w + k <= 48 * GIB for w, k in zip(p.weight_bytes_per_stage, p.kv_cache_bytes_per_stage, strict=True))
    # Every stage keeps the KV cache of at least one request of the whole context, over its layers.
    assert p.kv_cache_tokens >= S120.context_length
    assert min(p.kv_cache_bytes_per_stage) // S120.kv_bytes_per_token(18) == p.kv_cache_tokens
    assert S120.plan(80, weights="bf16").stages == 4


def test_smaller_gpus_need_more_stages():
    assert S120.plan(24).stages == 4


def test_model_that_cannot_fit_raises():
    with pytest.raises(PlanError, match="does not fit"):
        S120.plan(8, max_stages=4)
    with pytest.raises(PlanError):
        S20.plan(0)
    with pytest.raises(PlanError, match="weights must be one of"):
        S20.plan(80, weights="fp8")  # type: ignore[arg-type]


@given(st.integers(1, 200), st.integers(1, 200))
def test_split_layers_is_contiguous_and_balanced(layers, stages):
    if stages > layers:
        with pytest.raises(PlanError):
            split_layers(layers, stages)
        return
    sizes = split_layers(layers, stages)
    assert sum(sizes) == layers and len(sizes) == stages
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_plan_command_prints_the_plan_as_json_or_refuses_with_the_numbers(capsys):
    import json

    from ossfleet.cli import main

    assert main(["plan", "--model", "gpt-oss-120b", "--gpu-gib", "48", "--weights", "mxfp4"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["stages"] == 2 and plan["layers_per_stage"] == [18, 18] and plan["weights"] == "mxfp4"
    assert plan["kv_cache_tokens"] >= 131072 and plan["weight_gib_per_stage"] == [30.38, 30.38]
    assert plan["stage_layers"] == [[0, 18], [18, 36]] and 65.2e9 < plan["checkpoint_bytes"] < 65.4e9
    assert main(["plan", "--model", "gpt-oss-20b", "--gpu-gib", "24", "--weights", "bf16", "--max-stages", "1"]) == 1
    err = capsys.readouterr().err
    assert "does not fit on 1 GPU(s) of 24 GiB" in err and "39.0 GiB" in err
    assert main(["plan", "--model", "gpt-oss-7b", "--gpu-gib", "24"]) == 2


def test_plan_names_vllm_for_a_replica_inside_one_node_and_the_batched_engine_across_nodes():
    from ossfleet.catalog import choose_engine

    one = S20.plan(24)
    assert choose_engine(one, 1).engine == "vllm"
    four = S120.plan(24)  # four stages of 24 GB
    assert four.stages == 4
    assert choose_engine(four, 8).engine == "vllm" and "pipeline_parallel_size=4" in choose_engine(four, 8).reason
    across = choose_engine(four, 2)
    assert across.engine == "batched" and "span nodes" in across.reason
    with pytest.raises(PlanError):
        choose_engine(one, 0)


# -- the other families -------------------------------------------------------------------------------

FAMILY_SPECS = ["llama-3.1-8b", "llama-3.1-70b", "gemma-2-9b", "gemma-2-27b", "mixtral-8x7b", "mixtral-8x22b"]


@pytest.mark.parametrize("name", FAMILY_SPECS)
def test_parameters_counted_from_the_architecture_match_the_published_totals(name):
    spec = CATALOG[name]
    assert abs(spec.params / spec.total_params - 1) < 0.005, (spec.params, spec.total_params)


@pytest.mark.parametrize("name", FAMILY_SPECS)
def test_families_are_planned_in_bf16_as_released_and_refuse_mxfp4(name):
    spec = CATALOG[name]
    plan = spec.plan(80.0, max_context=8192)
    # bf16: two bytes a parameter, the tied embedding once on a one-stage replica.
    assert sum(plan.weight_bytes_per_stage) == pytest.approx(spec.params * 2, rel=0.001)
    with pytest.raises(PlanError, match=r"released in bf16.*weights must be one of \['bf16'\]"):
        spec.plan(80.0, weights="mxfp4")


def test_a_tied_embedding_is_held_by_both_ends_of_a_pipeline_and_once_on_one_stage():
    gemma = CATALOG["gemma-2-27b"]
    one = gemma.stage_bytes((46,))[0]
    two = gemma.stage_bytes((23, 23))
    assert sum(two) - one == gemma.embedding_bytes()
    llama = CATALOG["llama-3.1-8b"]  # untied: the head is its own matrix either way
    assert sum(llama.stage_bytes((16, 16))) == llama.stage_bytes((32,))[0]


def test_refusal_for_a_family_gives_the_numbers_and_no_mxfp4_advice():
    with pytest.raises(PlanError) as e:
        CATALOG["llama-3.1-70b"].plan(24.0, max_stages=2)
    msg = str(e.value)
    assert "llama-3.1-70b (bf16 weights) does not fit on 2 GPU(s) of 24 GiB" in msg
    assert "131.4 GiB" in msg and "mxfp4" not in msg


def test_config_refuses_mxfp4_for_a_family_released_in_bf16():
    from pydantic import ValidationError

    from ossfleet.config import ModelConfig

    with pytest.raises(ValidationError, match=r"llama-3\.1-8b is released in bf16"):
        ModelConfig(name="llama", spec="llama-3.1-8b", path="x", weights="mxfp4")
