"""What the gateway admits, decided from plain values: the gateway's pipeline without its I/O.

The gateway gathers the inputs (the tenant as Redis holds it, the rendered prompts, the router's placement,
the checked grammar, the adapter) and hands them here; :func:`plan_admission` returns the :class:`Admission`
that ``RequestQueue.admit`` runs as one script: one work item per choice, each with its reservation, and the
tenant's limits. Nothing here reads a clock, Redis or a tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ossfleet.control import budget
from ossfleet.control.pricing import cost_nusd, with_surcharge
from ossfleet.control.queue import Admission, GroupMember
from ossfleet.control.router import Placement, TenantPolicy
from ossfleet.errors import InvalidRequest
from ossfleet.protocol.work import AdapterRef, WorkItem

if TYPE_CHECKING:
    from ossfleet.adapters.store import AdapterRecord
    from ossfleet.config import ModelConfig, PrioritiesConfig, TenantConfig
    from ossfleet.protocol.chat import ChatRequest


@dataclass(frozen=True)
class Submitted:
    """A request the queue took (or had taken: ``duplicate``, the same idempotency key)."""

    request_id: str
    placement: Placement
    input_tokens: int  # the group's, summed over its requests
    duplicate: bool
    request_ids: tuple[str, ...] = ()  # every choice's, in order; request_id is the first
    model: str = ""  # what responses name: the placed model, or "<model>:<adapter>"

    @property
    def model_name(self) -> str:
        return self.model or self.placement.model


def tenant_policy(t: TenantConfig, priorities: PrioritiesConfig, budget_left_nusd: int | None) -> TenantPolicy:
    """The router's view of a tenant: its models, bands, budget left and fallback."""
    bands = tuple(priorities.bands)
    return TenantPolicy(
        name=t.name,
        allowed_models=tuple(t.allowed_models),
        bands=bands,
        max_band=bands.index(t.max_band) if t.max_band else 0,
        default_band=bands.index(t.default_band or priorities.default),
        budget_left_nusd=budget_left_nusd,
        allow_fallback=t.allow_fallback,
        max_wait_s=t.max_wait_s,
    )


def check_features(req: ChatRequest, m: ModelConfig) -> None:
    """Refuse what the model's engine cannot do, and what cannot be combined, naming the field."""
    fmt = req.output_format
    wanted = [f for f, on in (("response_format", fmt is not None and fmt.kind != "tool_call"),
                              ("tool_choice", fmt is not None and fmt.kind == "tool_call"),
                              ("logprobs", req.logprobs is not None)) if on]  # fmt: skip
    if wanted and not m.enforces_grammars():
        raise InvalidRequest(
            f"{wanted[0]} is not supported by model {m.name!r}, whose engine is {m.engine!r}; only ossfleet's "
            "batched engine and vLLM enforce grammars and return log-probabilities",
            param=wanted[0],
        )
    if fmt is not None and (req.min_tokens or req.ignore_eos):
        raise InvalidRequest(
            "min_tokens and ignore_eos cannot be combined with structured output, which ends when its value does",
            param="min_tokens" if req.min_tokens else "ignore_eos",
        )


def plan_admission(
    t: TenantConfig,
    req: ChatRequest,
    placement: Placement,
    prompts: Sequence[list[int]],
    *,
    model: ModelConfig,
    request_ids: Sequence[str],
    period: str,
    batch_discount: float,
    grammar: str | None = None,
    adapter: AdapterRecord | None = None,
) -> Admission:
    """The admission of a placed request: one work item per choice (``req.choices()``, whose prompts are
    ``prompts``, one per distinct prompt), each reserving its most at the model's price (with the adapter
    surcharge, at the batch discount for a batch line), and the tenant's limits as the script enforces them."""
    choices = req.choices()
    assert len(request_ids) == len(choices) and len(prompts) * req.n == len(choices)
    discount = batch_discount if req.batch else 0.0
    price = model.price if adapter is None else with_surcharge(model.price, model.adapters.surcharge)
    ref = None if adapter is None else AdapterRef(adapter.key, adapter.path)
    n_max = placement.max_tokens
    members = []
    for i, (rid, c) in enumerate(zip(request_ids, choices, strict=True)):
        prompt = prompts[i // req.n]
        item = WorkItem.of(c, prompt, n_max, grammar=grammar, discount=discount, adapter=ref)
        members.append(GroupMember(rid, item, len(prompt), n_max, cost_nusd(price, len(prompt), n_max, discount)))
    first = members[0]
    return Admission(
        request_id=first.request_id,
        tenant=t.name,
        model=placement.model,
        band=placement.band,
        item=first.item,
        input_tokens=first.input_tokens,
        max_tokens=n_max,
        reserve_nusd=first.reserve_nusd,
        budget_limit_nusd=budget.limit_nusd(t.budget),
        alert_at_nusd=budget.alert_at_nusd(t.budget),
        max_inflight=0 if req.batch else t.limits.max_concurrent_streams,
        track_inflight=not req.batch,
        count_rate=not req.batch,
        period=period,
        rpm=t.limits.rpm,
        tpm=t.limits.tpm,
        weight=t.weight,
        idempotency_key=req.idempotency_key,
        more=tuple(members[1:]),
        adapter=adapter.key if adapter is not None else "",
        usage_name=adapter.id if adapter is not None else "",
    )
