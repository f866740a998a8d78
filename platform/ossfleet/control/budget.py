"""A tenant's budget: its periods and what is left of it, computed here and nowhere else in Python.

``budget left = limit - spent - reserved`` (integer nano-dollars). The Lua scripts that admit a request
(``reserve_budget`` in ``lua/common.lua``) compute the same, atomically with the reservation;
tests/integration/test_budget_contract.py checks that both agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ossfleet.control.pricing import NANO_PER_USD

if TYPE_CHECKING:
    from ossfleet.config import BudgetConfig


def period_id(period: str, now: datetime | None = None) -> str:
    """The budget period a moment falls in: '2026-11' (monthly) or '2026-11-23' (daily), UTC."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%d" if period == "daily" else "%Y-%m")


def limit_nusd(b: BudgetConfig) -> int:
    return round(b.limit_usd * NANO_PER_USD)


def alert_at_nusd(b: BudgetConfig) -> int:
    """Where the soft alert fires (0: never)."""
    return round(b.limit_usd * b.soft_alert_fraction * NANO_PER_USD)


def left_nusd(limit: int, spent: int, reserved: int) -> int:
    """What the tenant may still reserve this period (negative: overdrawn by a settlement above its reservation)."""
    return limit - spent - reserved
