"""Placement: which model, band and reasoning effort a request gets, and what to reserve.

:func:`place` is a pure function of plain data (the request, the tenant's
policy and remaining budget, the models with their prices and load); the
gateway gathers that data and acts on the answer. It either returns a
:class:`Placement` or raises a typed error that says what to change.

``auto`` tries the models from the most capable down and takes the first
whose expected wait is within the tenant's ``max_wait_s`` and whose cost the
budget covers; within a model it may lower the reasoning effort, which caps
the output tokens (and so the reservation), to fit the budget. An explicit
model is never changed, nor its effort lowered, unless the tenant's policy
allows fallback; the placement says what was chosen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ossfleet.config import PriceConfig
from ossfleet.control.pricing import NANO_PER_USD, cost_nusd, usd
from ossfleet.errors import BudgetExhausted, ContextTooLong, InvalidRequest, ModelNotFound, PermissionDenied

AUTO = "auto"
EFFORTS = ("low", "medium", "high")
# The most output tokens a request may produce at each effort when the router
# lowers the effort to fit a budget (None: as many as the caller asked for).
EFFORT_OUTPUT_CAP: dict[str, int | None] = {"high": None, "medium": 4096, "low": 1024}


@dataclass(frozen=True)
class RouteRequest:
    model: str
    input_tokens: int
    max_tokens: int
    priority: str | None = None  # a band name; None: the tenant's default
    reasoning_effort: str | None = None  # None: "medium"
    discount: float = 0.0  # off every model's price (batch lines)


@dataclass(frozen=True)
class TenantPolicy:
    name: str
    allowed_models: tuple[str, ...]
    bands: tuple[str, ...]  # every band, highest first
    max_band: int  # the most urgent band (lowest index) this tenant may use
    default_band: int
    budget_left_nusd: int | None  # None: no hard limit
    allow_fallback: bool = False
    max_wait_s: float = 30.0  # what `auto` will accept before preferring a less loaded model

    def may_use(self, model: str) -> bool:
        return "*" in self.allowed_models or model in self.allowed_models


@dataclass(frozen=True)
class ModelLoad:
    """What the queue and the replicas' heartbeats say about a model right now."""

    waiting: int  # requests queued ahead (all bands)
    replicas: int  # live replicas
    requests_per_s: float  # measured completions per second per replica (0: unknown)
    cold_start_s: float = 60.0  # time to bring a first replica up

    def expected_wait_s(self) -> float:
        if self.replicas == 0:
            return self.cold_start_s + (self.waiting / self.requests_per_s if self.requests_per_s else 0.0)
        if self.waiting == 0:
            return 0.0
        if self.requests_per_s <= 0:
            return math.inf if self.waiting else 0.0
        return self.waiting / (self.replicas * self.requests_per_s)


@dataclass(frozen=True)
class ModelOption:
    name: str
    capability: float  # larger is better; `auto` prefers the most capable that fits
    price: PriceConfig
    max_context: int
    load: ModelLoad | None = None  # None: unknown, taken as no wait


@dataclass(frozen=True)
class Placement:
    model: str
    band: int
    reasoning_effort: str
    max_tokens: int
    reserve_nusd: int
    requested_model: str
    requested_effort: str

    @property
    def fell_back(self) -> bool:
        return self.requested_model not in (AUTO, self.model)

    @property
    def effort_lowered(self) -> bool:
        return self.reasoning_effort != self.requested_effort


def _band(req: RouteRequest, tenant: TenantPolicy) -> int:
    if req.priority is None:
        return tenant.default_band
    if req.priority not in tenant.bands:
        # A band that does not exist is a malformed request (400), not a forbidden one (403).
        raise InvalidRequest(f"unknown priority {req.priority!r}; bands are {list(tenant.bands)}", param="priority")
    band = tenant.bands.index(req.priority)
    if band < tenant.max_band:
        allowed = list(tenant.bands[tenant.max_band :])
        raise PermissionDenied(f"tenant {tenant.name!r} may use priorities {allowed}", param="priority")
    return band


def _wait(m: ModelOption) -> float:
    return m.load.expected_wait_s() if m.load else 0.0


def _candidates(req: RouteRequest, tenant: TenantPolicy, models: Sequence[ModelOption]) -> list[ModelOption]:
    by_name = {m.name: m for m in models}
    if req.model == AUTO:
        usable = sorted((m for m in models if tenant.may_use(m.name)), key=lambda m: -m.capability)
        if not usable:
            raise PermissionDenied(f"tenant {tenant.name!r} may use no model")
        # Most capable first among those whose wait is acceptable, then the rest by wait.
        ok = [m for m in usable if _wait(m) <= tenant.max_wait_s]
        return ok + sorted((m for m in usable if m not in ok), key=_wait)
    chosen = by_name.get(req.model)
    if chosen is None:
        raise ModelNotFound(
            f"model {req.model!r} does not exist; available: {sorted(by_name)} or 'auto'", param="model"
        )
    if not tenant.may_use(chosen.name):
        raise ModelNotFound(f"model {req.model!r} is not available to tenant {tenant.name!r}", param="model")
    out = [chosen]
    if tenant.allow_fallback:
        lesser = (m for m in models if m is not chosen and tenant.may_use(m.name) and m.capability < chosen.capability)
        out += sorted(lesser, key=lambda m: -m.capability)
    return out


def _efforts(requested: str, may_lower: bool) -> Iterator[str]:
    yield requested
    if may_lower:
        yield from reversed(EFFORTS[: EFFORTS.index(requested)])


def place(req: RouteRequest, tenant: TenantPolicy, models: Sequence[ModelOption]) -> Placement:
    """Choose a placement, or raise ModelNotFound / PermissionDenied / ContextTooLong / BudgetExhausted."""
    effort = req.reasoning_effort or "medium"
    if effort not in EFFORTS:
        raise PermissionDenied(f"reasoning_effort must be one of {list(EFFORTS)}", param="reasoning_effort")
    band = _band(req, tenant)
    candidates = _candidates(req, tenant, models)
    fitting = [m for m in candidates if req.input_tokens + req.max_tokens <= m.max_context]
    if not fitting:
        m = candidates[0]
        raise ContextTooLong(
            f"prompt ({req.input_tokens} tokens) + max_tokens ({req.max_tokens}) exceed {m.name}'s context "
            f"({m.max_context}); shorten the prompt or lower max_tokens",
            param="messages",
        )
    may_lower = req.model == AUTO or tenant.allow_fallback
    cheapest: int | None = None
    for m in fitting:
        for e in _efforts(effort, may_lower):
            cap = EFFORT_OUTPUT_CAP[e] if e != effort else None
            max_tokens = min(req.max_tokens, cap) if cap else req.max_tokens
            reserve = cost_nusd(m.price, req.input_tokens, max_tokens, req.discount)
            cheapest = reserve if cheapest is None else min(cheapest, reserve)
            if tenant.budget_left_nusd is None or reserve <= tenant.budget_left_nusd:
                return Placement(m.name, band, e, max_tokens, reserve, req.model, effort)
    # Below zero when the budget was lowered under what is already reserved and spent.
    left = max(0, tenant.budget_left_nusd or 0)
    raise BudgetExhausted(
        f"tenant {tenant.name!r} has {usd(left)} of budget left; this request may cost up to {usd(cheapest or 0)}. "
        "Lower max_tokens or raise the budget.",
        budget_left_usd=left / NANO_PER_USD,
    )
