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
    assert 12 < S20.checkpoint_bytes / GIB < 14
    assert 60 < S120.checkpoint_bytes / GIB < 62


def test_20b_fits_one_16gb_gpu():
    assert S20.plan(16).stages == 1
    assert S20.plan(24).stages == 1


def test_120b_on_80gb_is_one_gpu_and_on_48gb_a_two_stage_pipeline():
    assert S120.plan(80).stages == 1
    p = S120.plan(48)
    assert p.stages == 2 and p.layers_per_stage == (18, 18)
    assert [r.start for r in p.layer_ranges()] == [0, 18]
    assert all(w + k <= 48 * GIB for w, k in zip(p.weight_bytes_per_stage, p.kv_cache_bytes_per_stage, strict=True))


def test_smaller_gpus_need_more_stages():
    assert S120.plan(24).stages == 3


def test_model_that_cannot_fit_raises():
    with pytest.raises(PlanError, match="does not fit"):
        S120.plan(8, max_stages=4)
    with pytest.raises(PlanError):
        S20.plan(0)


@given(st.integers(1, 200), st.integers(1, 200))
def test_split_layers_is_contiguous_and_balanced(layers, stages):
    if stages > layers:
        with pytest.raises(PlanError):
            split_layers(layers, stages)
        return
    sizes = split_layers(layers, stages)
    assert sum(sizes) == layers and len(sizes) == stages
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
