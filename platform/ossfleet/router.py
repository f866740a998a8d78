"""Placement: which model, band and reasoning effort a request gets, and what to reserve.

:func:`place` is a pure function of plain data (the request, the tenant's
policy and remaining budget, the models with their prices and load); the
gateway gathers that data and acts on the answer. It either returns a
:class:`Placement` or raises a typed error that says what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ossfleet.config import PriceConfig
from ossfleet.errors import BudgetExhausted, ContextTooLong, ModelNotFound, PermissionDenied
from ossfleet.pricing import NANO_PER_USD, cost_nusd, usd

AUTO = "auto"
EFFORTS = ("low", "medium", "high")


@dataclass(frozen=True)
class RouteRequest:
    model: str
    input_tokens: int
    max_tokens: int
    priority: str | None = None  # a band name; None: the tenant's default
    reasoning_effort: str | None = None  # None: "medium"


@dataclass(frozen=True)
class TenantPolicy:
    name: str
    allowed_models: tuple[str, ...]
    bands: tuple[str, ...]  # every band, highest first
    max_band: int  # the most urgent band (lowest index) this tenant may use
    default_band: int
    budget_left_nusd: int | None  # None: no hard limit
    allow_fallback: bool = False

    def may_use(self, model: str) -> bool:
        return "*" in self.allowed_models or model in self.allowed_models


@dataclass(frozen=True)
class ModelOption:
    name: str
    capability: float  # larger is better; `auto` prefers the most capable that fits
    price: PriceConfig
    max_context: int


@dataclass(frozen=True)
class Placement:
    model: str
    band: int
    reasoning_effort: str
    reserve_nusd: int
    requested_model: str

    @property
    def fell_back(self) -> bool:
        return self.requested_model not in (AUTO, self.model)


def _band(req: RouteRequest, tenant: TenantPolicy) -> int:
    if req.priority is None:
        return tenant.default_band
    if req.priority not in tenant.bands:
        raise PermissionDenied(f"unknown priority {req.priority!r}; bands are {list(tenant.bands)}", param="priority")
    band = tenant.bands.index(req.priority)
    if band < tenant.max_band:
        allowed = list(tenant.bands[tenant.max_band :])
        raise PermissionDenied(f"tenant {tenant.name!r} may use priorities {allowed}", param="priority")
    return band


def _fits(m: ModelOption, req: RouteRequest) -> bool:
    return req.input_tokens + req.max_tokens <= m.max_context


def place(req: RouteRequest, tenant: TenantPolicy, models: Sequence[ModelOption]) -> Placement:
    """Choose a placement, or raise ModelNotFound / PermissionDenied / ContextTooLong / BudgetExhausted."""
    effort = req.reasoning_effort or "medium"
    band = _band(req, tenant)
    by_name = {m.name: m for m in models}
    if req.model == AUTO:
        candidates = sorted((m for m in models if tenant.may_use(m.name)), key=lambda m: -m.capability)
        if not candidates:
            raise PermissionDenied(f"tenant {tenant.name!r} may use no model")
    else:
        chosen = by_name.get(req.model)
        if chosen is None:
            raise ModelNotFound(
                f"model {req.model!r} does not exist; available: {sorted(by_name)} or 'auto'", param="model"
            )
        if not tenant.may_use(chosen.name):
            raise ModelNotFound(f"model {req.model!r} is not available to tenant {tenant.name!r}", param="model")
        candidates = [chosen]
        if tenant.allow_fallback:
            candidates += sorted(
                (m for m in models if m is not chosen and tenant.may_use(m.name) and m.capability < chosen.capability),
                key=lambda m: -m.capability,
            )
    fitting = [m for m in candidates if _fits(m, req)]
    if not fitting:
        m = candidates[0]
        raise ContextTooLong(
            f"prompt ({req.input_tokens} tokens) + max_tokens ({req.max_tokens}) exceed {m.name}'s context "
            f"({m.max_context}); shorten the prompt or lower max_tokens",
            param="messages",
        )
    for m in fitting:
        reserve = cost_nusd(m.price, req.input_tokens, req.max_tokens)
        if tenant.budget_left_nusd is None or reserve <= tenant.budget_left_nusd:
            return Placement(m.name, band, effort, reserve, req.model)
    left = tenant.budget_left_nusd or 0
    raise BudgetExhausted(
        f"tenant {tenant.name!r} has {usd(left)} of budget left, less than this request may cost "
        f"({usd(cost_nusd(fitting[-1].price, req.input_tokens, req.max_tokens))}); "
        "lower max_tokens or raise the budget",
        budget_left_usd=left / NANO_PER_USD,
    )
