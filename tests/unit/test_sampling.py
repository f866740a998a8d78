import torch

from ossfleet.engine.base import SamplingParams
from ossfleet.engine.sampling import generator_for, sample, sample_row

LOGITS = torch.tensor([[0.1, 3.0, 2.9, -1.0, 0.5], [2.0, 0.0, 0.0, 0.0, 2.1]])


def test_greedy_is_argmax():
    assert sample(LOGITS, [SamplingParams(temperature=0)] * 2, [generator_for(SamplingParams())] * 2) == [1, 4]


def test_top_k_1_and_tiny_top_p_are_greedy():
    for p in (SamplingParams(temperature=1.5, top_k=1), SamplingParams(temperature=1.5, top_p=1e-6)):
        for _ in range(20):
            assert sample_row(LOGITS[0], p, generator_for(p)) == 1


def test_top_k_never_picks_outside_the_k_best():
    p = SamplingParams(temperature=5.0, top_k=2, seed=1)
    g = generator_for(p)
    assert {sample_row(LOGITS[0], p, g) for _ in range(200)} == {1, 2}


def test_same_seed_same_draws():
    p = SamplingParams(temperature=2.0, seed=123)
    a = [sample_row(LOGITS[1], p, g) for g in [generator_for(p)] for _ in range(30)]
    b = [sample_row(LOGITS[1], p, g) for g in [generator_for(p)] for _ in range(30)]
    assert a == b and len(set(a)) > 1
