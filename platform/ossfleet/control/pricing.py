"""What a request costs, in integer nano-USD, so budget sums are exact."""

from __future__ import annotations

from ossfleet.config import PriceConfig

NANO_PER_USD = 1_000_000_000


def cost_nusd(price: PriceConfig, input_tokens: int, output_tokens: int, discount: float = 0.0) -> int:
    """Cost of a request at per-1k-token prices, rounded up to the nano-dollar.

    Integer arithmetic throughout (prices as nano-USD per 1k tokens, the
    discount in basis points), so the same request always costs the same.
    """
    p_in = round(price.input_per_1k * NANO_PER_USD)
    p_out = round(price.output_per_1k * NANO_PER_USD)
    keep_bp = round((1.0 - discount) * 10_000)
    total = (input_tokens * p_in + output_tokens * p_out) * keep_bp
    return -(-total // (1000 * 10_000))


def with_surcharge(price: PriceConfig, surcharge: PriceConfig) -> PriceConfig:
    """A price plus a surcharge (an adapter request's: the model's price and its adapters' surcharge)."""
    return PriceConfig(
        input_per_1k=price.input_per_1k + surcharge.input_per_1k,
        output_per_1k=price.output_per_1k + surcharge.output_per_1k,
    )


def usd(nusd: int) -> str:
    """A nano-dollar amount for people: '$12.5', '$0.0000003'."""
    s = f"{nusd / NANO_PER_USD:.9f}".rstrip("0")
    return "$" + (s + "0" if s.endswith(".") else s)
