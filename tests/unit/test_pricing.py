from ossfleet.config import PriceConfig
from ossfleet.control.pricing import NANO_PER_USD, cost_nusd


def test_cost_is_exact_integer_nano_dollars():
    price = PriceConfig(input_per_1k=0.00005, output_per_1k=0.0002)
    assert cost_nusd(price, 1000, 1000) == round(0.00025 * NANO_PER_USD)
    assert cost_nusd(price, 0, 0) == 0


def test_cost_rounds_up_and_applies_discount():
    price = PriceConfig(input_per_1k=1e-9, output_per_1k=0)
    assert cost_nusd(price, 1, 0) == 1  # a fraction of a nano-dollar still costs one
    p = PriceConfig(input_per_1k=0.001, output_per_1k=0.002)
    assert cost_nusd(p, 1000, 1000, discount=0.5) == cost_nusd(p, 1000, 1000) // 2
