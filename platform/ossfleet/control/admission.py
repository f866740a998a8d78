"""What the gateway admits, decided from plain values: the gateway's pipeline without its I/O.

The gateway gathers the inputs (the tenant as Redis holds it, the rendered prompts, the router's placement,
the checked grammar, the adapter) and hands them here; :func:`plan_admission` returns the :class:`Admission`
that ``RequestQueue.admit`` runs as one script: one work item per choice, each with its reservation, and the
tenant's limits. Nothing here reads a clock, Redis or a tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ossfleet.catalog import CATALOG
from ossfleet.control import budget
from ossfleet.control.pricing import NANO_PER_USD, cost_nusd, usd, with_surcharge
from ossfleet.control.router import Placement, TenantPolicy
from ossfleet.control.scripts import _s
from ossfleet.errors import BudgetExhausted, InvalidRequest, OssfleetError, QueueFull, RateLimited
from ossfleet.families import FAMILIES
from ossfleet.protocol.work import AdapterRef, WorkItem

if TYPE_CHECKING:
    from ossfleet.adapters.store import AdapterRecord
    from ossfleet.config import ModelConfig, PrioritiesConfig, TenantConfig
    from ossfleet.protocol.chat import ChatRequest


@dataclass(frozen=True)
class Admission:
    """What the gateway asks to enqueue (after routing and validation)."""

    request_id: str
    tenant: str
    model: str
    band: int
    item: WorkItem
    input_tokens: int
    max_tokens: int
    reserve_nusd: int
    budget_limit_nusd: int  # -1: no limit
    period: str
    rpm: int
    tpm: int
    weight: float = 1.0
    idempotency_key: str = ""
    alert_at_nusd: int = 0  # 0: no soft alert
    max_inflight: int = 0  # requests the tenant may have waiting or running at once; 0: no limit
    track_inflight: bool = True  # False: a batch line, not one of the tenant's concurrent streams
    count_rate: bool = True  # False: a batch line, outside the tenant's rpm/tpm
    # Further requests admitted with this one, all or nothing (the choices of n > 1, a list of
    # prompts): same tenant, model and band; the limits apply to the group's sums.
    more: tuple[GroupMember, ...] = ()
    adapter: str = ""  # the LoRA adapter's cache key (AdapterRecord.key); "": the base model
    usage_name: str = ""  # what the tenant's usage is recorded under ("<model>:<adapter>"); "": the model

    @property
    def group_input_tokens(self) -> int:
        return self.input_tokens + sum(m.input_tokens for m in self.more)

    @property
    def group_tokens(self) -> int:
        return self.input_tokens + self.max_tokens + sum(m.input_tokens + m.max_tokens for m in self.more)


@dataclass(frozen=True)
class GroupMember:
    request_id: str
    item: WorkItem
    input_tokens: int
    max_tokens: int
    reserve_nusd: int


@dataclass(frozen=True)
class Admitted:
    request_id: str
    duplicate: bool
    request_ids: tuple[str, ...] = ()  # the whole group's, in order (the first is request_id)


def refusal(a: Admission, reply: Sequence[Any]) -> OssfleetError:
    """The typed error an admit script's refusal stands for, saying what to change."""
    status = _s(reply[0])
    if status == "RATE":
        what, retry_ms = _s(reply[1]), int(_s(reply[2]))
        limit = a.rpm if what == "requests" else a.tpm
        return RateLimited(
            f"tenant {a.tenant!r} is over its {what}-per-minute limit ({limit}); retry in {retry_ms / 1000:.1f} s",
            retry_after_s=retry_ms / 1000,
            limit=what,
        )
    if status == "RATE_NEVER" and _s(reply[1]) == "requests":
        return RateLimited(
            f"this request asks for {1 + len(a.more)} completions at once, more than tenant {a.tenant!r}'s "
            f"requests-per-minute limit ({a.rpm}); lower n",
            retry_after_s=60.0,
            limit="requests",
        )
    if status == "RATE_NEVER":
        return RateLimited(
            f"this request needs {a.group_tokens} tokens (prompt + max_tokens), more than "
            f"tenant {a.tenant!r}'s tokens-per-minute limit ({a.tpm}); lower max_tokens or shorten the prompt",
            retry_after_s=60.0,
            limit="tokens",
        )
    if status == "CONCURRENCY":
        return RateLimited(
            f"tenant {a.tenant!r} has {_s(reply[1])} requests in flight, its limit ({a.max_inflight}); "
            "retry when one finishes",
            retry_after_s=1.0,
            limit="concurrency",
        )
    if status == "QUEUE_FULL":
        return QueueFull(f"the queue for model {a.model!r} is full ({_s(reply[1])} waiting); retry shortly")
    if status == "ABORTED":  # a cluster's reconciler gave up on this admission (the gateway stalled)
        return QueueFull(f"the queue for model {a.model!r} did not take the request in time; retry shortly")
    if status == "BUDGET":
        left = int(_s(reply[1]))
        return BudgetExhausted(
            f"tenant {a.tenant!r} has {usd(left)} of budget left (period {a.period}); this request "
            f"may cost up to {usd(a.reserve_nusd + sum(m.reserve_nusd for m in a.more))}. Lower max_tokens "
            "(or n) or return the budget.",
            budget_left_usd=left / NANO_PER_USD,
        )
    return OssfleetError(f"admit script replied {reply!r}")


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
    """Refuse what the model's family or engine cannot do, and what cannot be combined, naming the field."""
    family = FAMILIES[CATALOG[m.spec].family]
    if req.tools and family.tool_format is None:
        raise InvalidRequest(
            f"tools are not supported by model {m.name!r}: {family.name} has no tool-call format ossfleet parses "
            f"(tools work with {sorted(f.name for f in FAMILIES.values() if f.tool_format)} models)",
            param="tools",
        )
    if req.reasoning_effort is not None and not family.reasons:
        raise InvalidRequest(
            f"reasoning_effort is not supported by model {m.name!r}: {family.name} does not reason (gpt-oss does)",
            param="reasoning_effort",
        )
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
