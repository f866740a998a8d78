"""What every section of the config file shares: strict, frozen, finite; and the error a bad file raises."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


class _Section(BaseModel):
    # No NaN or infinity anywhere: every number here is used in arithmetic (budgets, weights, prices).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
