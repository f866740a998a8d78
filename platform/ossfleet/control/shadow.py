"""Shadow traffic: a fraction of the requests one model serves for a tenant is also sent to a second model,
and the two answers are kept side by side.

The shadow is admitted after its primary (which it never holds up: it runs in a task of its own, once the
primary is in the queue), as a batch line would be: in the lowest band, billed to the tenant at the batch
discount, outside its rate and concurrency limits; refused like any request when the tenant's budget would
not cover it (the refusal is counted, the primary unaffected). Its answer goes to no client: the task reads
both streams to their ends and stores the pair (``comparison_store``); the shadow's latencies are counted in
role ``shadow``. A gateway that stops while a shadow runs loses that pair (the shadow still runs, billed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from ossfleet.catalog import CATALOG
from ossfleet.control.comparison import Answer, Observation, Pair, answer
from ossfleet.errors import OssfleetError
from ossfleet.families import FAMILIES
from ossfleet.protocol.events import Outcome

if TYPE_CHECKING:
    from ossfleet.config import PlatformConfig, ShadowConfig, TenantConfig
    from ossfleet.control.admission import Submitted
    from ossfleet.control.comparison_store import ComparisonStore
    from ossfleet.control.streams import Relay
    from ossfleet.protocol.chat import ChatRequest

log = logging.getLogger("ossfleet.control.shadow")


class Gateway(Protocol):
    """What a shadow needs of the gateway (``GatewayCore``): its config, admission, relay and counters."""

    cfg: PlatformConfig
    relay: Relay
    comparisons: ComparisonStore

    async def submit(self, t: TenantConfig, req: ChatRequest) -> Submitted: ...


def shadow_request(req: ChatRequest, model: str, cfg: PlatformConfig) -> ChatRequest | str:
    """The request a shadow sends to ``model``: the primary's first choice as a batch line (lowest band,
    discount, no rate limits), without what only the primary's client reads (log-probabilities, the
    idempotency key) or what ``model`` cannot take in the same words (a reasoning effort for a model that
    does not reason). A reason (an error code) instead where the prompt means nothing to ``model``: token
    ids of another family's vocabulary."""
    m = cfg.model(model)
    primary = cfg.model(req.model)
    assert m is not None and primary is not None
    family = CATALOG[m.spec].family
    if isinstance(req.prompt, tuple) and family != CATALOG[primary.spec].family:
        return "token_ids_of_another_family"
    return replace(
        req, model=model, n=1, more_prompts=(), batch=True, priority=None, idempotency_key="", logprobs=None,
        reasoning_effort=req.reasoning_effort if FAMILIES[family].reasons else None,
    )  # fmt: skip


def _answer(model: str, request_id: str, out: Outcome | BaseException) -> Answer:
    if isinstance(out, BaseException):
        return answer(model, request_id, "", None, 0, 0, error=str(out) or type(out).__name__)
    text = out.content or "".join(f"{c['name']}({c['arguments']})" for c in out.tool_calls)
    return answer(model, request_id, text, str(out.finish_reason), out.output_tokens, out.cost_nusd)


async def run_shadow(core: Gateway, t: TenantConfig, req: ChatRequest, sub: Submitted, cfg: ShadowConfig) -> None:
    """Send ``req``'s shadow to ``cfg.model``, wait for both answers, store the pair."""
    sreq = shadow_request(req, cfg.model, core.cfg)
    admitted: Submitted | None = None
    refusal = sreq if isinstance(sreq, str) else ""
    if not isinstance(sreq, str):
        try:
            admitted = await core.submit(t.model_copy(update={"allow_fallback": False, "shadows": {}}), sreq)
        except OssfleetError as e:
            refusal = f"{e.code}: {e}"
    primary_read = core.relay.outcome(sub.model_name, sub.request_id)
    if admitted is None:
        code = refusal.partition(":")[0]
        core.comparisons.add(Observation(t.name, cfg.model, "shadow", refused=code))
        log.info("event=shadow_refused request_id=%s tenant=%s model=%s reason=%s", sub.request_id, t.name,
                 cfg.model, code)  # fmt: skip
        (first,) = await asyncio.gather(primary_read, return_exceptions=True)
        second = answer(cfg.model, "", "", None, 0, 0, error=refusal)
    else:
        shadow_read = core.relay.outcome(
            admitted.model_name, admitted.request_id, labels=(t.name, admitted.model_name), role="shadow"
        )
        first, out = await asyncio.gather(primary_read, shadow_read, return_exceptions=True)
        if isinstance(out, asyncio.CancelledError):
            raise out
        second = _answer(admitted.model_name, admitted.request_id, out)
    if isinstance(first, asyncio.CancelledError):
        raise first
    pair = Pair(sub.request_id, time.time(), _answer(sub.model_name, sub.request_id, first), second)
    await core.comparisons.add_pair(t.name, pair)
