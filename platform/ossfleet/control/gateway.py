"""The gateway's protocol-neutral core: authenticate, place, admit, relay.

The HTTP (OpenAI) and gRPC front ends both call this class. It holds no
model, only each model's tokenizer, to render harmony prompts and count
tokens so that costs are reserved and context limits checked before anything
is queued. Every refusal is a typed :mod:`ossfleet.errors` error raised
before Redis changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from ossfleet import metrics
from ossfleet.adapters.format import AdapterInvalid, ModelShape, validate
from ossfleet.adapters.store import AdapterRecord, AdapterStore, check_name, split_model
from ossfleet.catalog import CATALOG
from ossfleet.chatformat import ChatFormat, TemplateRenderer
from ossfleet.config import ModelConfig, PlatformConfig, ShadowConfig, TenantConfig
from ossfleet.control import budget
from ossfleet.control.admission import Admission, Submitted, check_features, plan_admission, tenant_policy
from ossfleet.control.aliases import choose, point
from ossfleet.control.apikeys import authenticate
from ossfleet.control.budget import period_id
from ossfleet.control.comparison import Observation, sampled
from ossfleet.control.comparison_store import ComparisonStore
from ossfleet.control.pricing import NANO_PER_USD
from ossfleet.control.queue import QueueDepth, queue_for
from ossfleet.control.router import AUTO, ModelLoad, ModelOption, Placement, RouteRequest, place
from ossfleet.control.scripts import _s
from ossfleet.control.shadow import run_shadow
from ossfleet.control.streams import Relay, StreamHub
from ossfleet.control.tenants import TenantRegistry
from ossfleet.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    OssfleetError,
    PermissionDenied,
)
from ossfleet.harmony import HarmonyRenderer, ReasoningEffort, raw_prompt_ids
from ossfleet.protocol.chat import ChatRequest, check_request
from ossfleet.redisdb import connect_async
from ossfleet.storage import FileStorage
from ossfleet.structured import Grammars, grammar

log = logging.getLogger("ossfleet.control.gateway")
T = TypeVar("T")


class GatewayCore:
    def __init__(self, cfg: PlatformConfig, redis_url: str) -> None:
        from transformers import AutoTokenizer

        self.cfg = cfg
        self.r = connect_async(redis_url, cfg.redis)
        self.queue = queue_for(cfg, self.r)
        # Reads every stream this gateway relays with one XREAD on a connection of its own.
        self.hub = StreamHub(connect_async(redis_url, cfg.redis, max_connections=2))
        self.relay = Relay(self.queue, self.hub, self.cancel_abandoned, self.observe)
        # What each model did for each tenant (its own requests and shadows), for comparing them.
        self.comparisons = ComparisonStore(self.r, self.queue.keys)
        # Each model's chat format (harmony, or its checkpoint's template) and the renderer of its prompts.
        self.formats: dict[str, ChatFormat] = {}
        self.renderers: dict[str, HarmonyRenderer | TemplateRenderer] = {}
        for m in cfg.models:
            tok = AutoTokenizer.from_pretrained(cfg.model_path(m))
            fmt = self.formats[m.name] = ChatFormat.of(tok, cfg.model_path(m))
            if fmt.family.name != CATALOG[m.spec].family:
                raise ValueError(
                    f"model {m.name!r}: its spec {m.spec!r} is a {CATALOG[m.spec].family} model, but the checkpoint "
                    f"at {cfg.model_path(m)} is {fmt.family.name}: point path at a {CATALOG[m.spec].family} checkpoint"
                )
            self.renderers[m.name] = fmt.renderer(tok, m.name)
        self._loads: dict[str, tuple[float, ModelLoad]] = {}
        self._render_pool = ThreadPoolExecutor(cfg.limits.render_threads, thread_name_prefix="ossfleet-render")
        self._render_slots: dict[str, asyncio.Semaphore] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._budget_read: dict[str, float] = {}  # tenant -> when its budget gauge was last set
        self._grammars: dict[str, Grammars] = {}
        # The tenants, as Redis holds them (seeded from the config; changed through the admin API).
        self.tenants = TenantRegistry(self.r, cfg)
        self.redis_url = redis_url
        # Tenants' LoRA adapters: records in Redis, files beside the batch files.
        self.adapters = AdapterStore(self.r, cfg.redis.namespace, FileStorage(cfg.storage_url()))

    async def close(self) -> None:
        self._render_pool.shutdown(wait=False, cancel_futures=True)
        await self.comparisons.close()
        await self.hub.close()
        await self.hub.r.aclose()
        await self.r.aclose()

    # -- who is calling -------------------------------------------------------------

    async def tenant(self, authorization: str | None) -> TenantConfig:
        # Asked of Redis on every request, never cached: a revoked key stops working at once.
        name = await authenticate(self.r, self.cfg.redis.namespace, authorization)
        t = await self.tenants.get(name)
        if t is None:  # a key left behind for a deleted tenant
            raise AuthenticationFailed("invalid API key")
        return t

    async def load(self, model: str) -> ModelLoad:
        """Queue depth and live replicas of a model, read at most once a second."""
        now = time.monotonic()
        cached = self._loads.get(model)
        if cached and now - cached[0] < 1.0:
            return cached[1]
        m = self.cfg.model(model)
        assert m is not None
        depth = await self.queue.depth(model)
        replicas = await self.queue.replicas(model)
        rates = [r.requests_per_s for r in replicas.values()]
        load = ModelLoad(
            waiting=sum(depth.waiting),
            replicas=len(replicas),
            requests_per_s=sum(rates) / len(rates) if rates else 0.0,
            cold_start_s=self.cfg.cold_start_s(m),
        )
        self._loads[model] = (now, load)
        return load

    async def options(self, requested: str) -> list[ModelOption]:
        """The models a placement may choose from, with their load where it matters (auto)."""
        out = []
        # One family's models only: a prompt rendered for one family means nothing to another (gpt-oss's
        # models share harmony and the o200k vocabulary).
        family = CATALOG[(self.cfg.model(requested) or self.cfg.models[0]).spec].family
        for m in self.cfg.models:
            if CATALOG[m.spec].family != family:
                continue
            load = await self.load(m.name) if requested == AUTO else None
            out.append(ModelOption(m.name, CATALOG[m.spec].total_params, m.price, m.max_context, load))
        return out

    async def usage(self, t: TenantConfig, period: str | None = None) -> dict[str, Any]:
        """The tenant's spend, reservations, budget left and per-model usage in a period (default: this one)."""
        period = period or period_id(t.budget.period)
        kept: dict[Any, Any] = await self.r.hgetall(self.queue.keys.budget(t.name, period))
        raw: dict[Any, Any] = await self.r.hgetall(self.queue.keys.usage(t.name, period))
        b = {_s(k): int(v) for k, v in kept.items()}
        models: dict[str, dict[str, int]] = {}
        for k, v in raw.items():
            name, _, field = _s(k).rpartition(":")
            if name and field in ("requests", "input_tokens", "output_tokens"):
                models.setdefault(name, {"requests": 0, "input_tokens": 0, "output_tokens": 0})[field] = int(v)
        spent, reserved = b.get("spent", 0), b.get("reserved", 0)
        left = budget.left_nusd(budget.limit_nusd(t.budget), spent, reserved)
        return {"spent_nusd": spent, "reserved_nusd": reserved, "left_nusd": left, "models": models}

    async def budget_left(self, t: TenantConfig) -> int:
        period = period_id(t.budget.period)
        reserved, spent = await self.r.hmget(self.queue.keys.budget(t.name, period), "reserved", "spent")
        left = budget.left_nusd(budget.limit_nusd(t.budget), int(spent or 0), int(reserved or 0))
        metrics.budget_left(t.name, max(0, left) / NANO_PER_USD)
        self._budget_read[t.name] = time.monotonic()
        return left

    async def budget_for_placement(self, t: TenantConfig, model: str) -> int | None:
        """The budget left, when the placement depends on it: ``auto`` or a tenant that may fall back to
        a cheaper model or a lower effort. Otherwise None (placement then tries only what was asked, and
        admission enforces the budget exactly, in the same step that reserves it), and the budget gauge
        is refreshed in the background at most once a second per tenant."""
        if model == AUTO or t.allow_fallback:
            return await self.budget_left(t)
        if time.monotonic() - self._budget_read.get(t.name, float("-inf")) >= 1.0:
            self._budget_read[t.name] = time.monotonic()
            self.spawn(self._refresh_budget_gauge(t))
        return None

    async def _refresh_budget_gauge(self, t: TenantConfig) -> None:
        try:
            await self.budget_left(t)
        except Exception as e:  # a gauge is no reason to fail anything
            log.warning("event=budget_gauge_failed tenant=%s error=%r", t.name, type(e).__name__)

    # -- adapters ---------------------------------------------------------------------

    def adapter_model(self, t: TenantConfig, model: str) -> ModelConfig:
        """The model config an adapter is for, or the typed error that says why it cannot have one."""
        m = self.cfg.model(model)
        if m is None:
            names = [x.name for x in self.cfg.models]
            raise ModelNotFound(f"model {model!r} does not exist; available: {names}", param="model")
        if not t.may_use(model):
            raise PermissionDenied(f"tenant {t.name!r} may not use model {model!r}")
        if not m.own_engine() or m.adapters.max_loaded == 0:
            raise InvalidRequest(f"model {model!r} serves no adapters (its engine is {m.engine!r}, "
                                 f"adapters.max_loaded {m.adapters.max_loaded})", param="model")  # fmt: skip
        return m

    async def upload_adapter(
        self, t: TenantConfig, model: str, name: str, config: bytes, weights: bytes
    ) -> AdapterRecord:
        """Validate a PEFT LoRA adapter against its model and store it; a bad one is refused, stored nowhere."""
        check_name(name)
        m = self.adapter_model(t, model)
        path = self.cfg.model_path(m)
        shape = ModelShape.of(json.loads((path / "config.json").read_text()))
        names = (m.name, m.spec, str(path))
        lim = m.adapters
        try:
            info = await asyncio.to_thread(
                validate, config, weights, shape, max_rank=lim.max_rank, max_bytes=lim.max_bytes, base_names=names
            )
        except AdapterInvalid as e:
            raise InvalidRequest(f"adapter refused: {e}", param=e.param) from None
        rec = await self.adapters.put(t.name, model, name, config, weights, info)
        log.info("event=adapter_stored tenant=%s adapter=%s rank=%d bytes=%d", t.name, rec.id, rec.rank, rec.nbytes)
        return rec

    async def adapter(self, t: TenantConfig, model_id: str) -> AdapterRecord:
        """The tenant's adapter named ``<model>:<name>`` (not found for anyone else's)."""
        model, name = split_model(model_id)
        if name is None:
            raise InvalidRequest(f"{model_id!r} names no adapter; use <model>:<adapter>", param="model")
        return await self.adapters.get(t.name, model, name)

    # -- submit: the gateway's pipeline ----------------------------------------------------

    def render(self, model: str, req: ChatRequest, effort: ReasoningEffort) -> list[int]:
        renderer = self.renderers[model]
        if req.prompt is not None:  # the other families' tokenizers add their BOS, as their releases do
            return raw_prompt_ids(renderer.tok, req.prompt, bos=not self.formats[model].family.harmony)
        return renderer.render(req.messages, effort=effort, tools=req.tools)

    async def render_off_loop(self, tenant: str, model: str, req: ChatRequest, effort: ReasoningEffort) -> list[int]:
        """:meth:`render` on the render pool: a large prompt never blocks the event loop (the
        tokenizer releases the GIL), and a tenant's own renders wait for each other, not others'."""
        return await self.off_loop(tenant, self.render, model, req, effort)

    async def off_loop(self, tenant: str, fn: Callable[..., T], *args: Any) -> T:
        """CPU-heavy work of a request (rendering, schema and grammar checks) on the render pool, never on
        the event loop, and at most ``tenant_render_concurrency`` of one tenant's at once."""
        slots = self._render_slots.get(tenant)
        if slots is None:
            slots = self._render_slots[tenant] = asyncio.Semaphore(self.cfg.limits.tenant_render_concurrency)
        async with slots:
            return await asyncio.get_running_loop().run_in_executor(self._render_pool, fn, *args)

    async def submit(self, t: TenantConfig, req: ChatRequest) -> Submitted:
        """Place and admit one request (its choices, as a group); raises a typed error and changes nothing
        if refused. The pipeline: the alias or adapter it names, the prompts rendered, the placement, the grammar
        checked, the admission planned (pure), then one script in Redis."""
        try:
            tenant, r, adapter = await self._resolve_model(t, req)
            prompts, placement = await self._place(tenant, r)
            m = self.cfg.model(placement.model)
            assert m is not None
            check_features(r, m)
            lark = await self._grammar(t.name, r, placement)
            ids = [uuid.uuid4().hex for _ in range(len(prompts) * r.n)]
            plan = plan_admission(tenant, r, placement, prompts, model=m, request_ids=ids,
                                  period=period_id(t.budget.period), batch_discount=self.cfg.batch.discount,
                                  grammar=lark, adapter=adapter)  # fmt: skip
            if t.debug_logging:  # the tenant asked for its prompts in the logs
                self._log_prompts(t, plan)
            admitted = await self.queue.admit(plan)
        except OssfleetError as e:
            metrics.request(t.name, req.model, req.priority or t.default_band or self.cfg.priorities.default, e.code)
            raise
        sub = Submitted(
            admitted.request_id, placement, plan.group_input_tokens, admitted.duplicate, admitted.request_ids,
            adapter.id if adapter is not None else placement.model,
        )  # fmt: skip
        band = self.cfg.priorities.bands[placement.band]
        metrics.request(t.name, placement.model, band, "duplicate" if sub.duplicate else "admitted")
        shadow = None if req.batch or sub.duplicate else t.shadows.get(sub.model_name)
        if shadow is not None and sampled(sub.request_id, shadow.fraction):
            self.spawn(self._shadow_quietly(t, req, sub, shadow))
        log.info(
            "event=admitted request_id=%s tenant=%s model=%s band=%d input_tokens=%d choices=%d duplicate=%s "
            "fell_back=%s effort_lowered=%s", sub.request_id, t.name, placement.model, placement.band,
            sub.input_tokens, len(ids), sub.duplicate, placement.fell_back, placement.effort_lowered,
        )  # fmt: skip
        return sub

    async def _resolve_model(
        self, t: TenantConfig, req: ChatRequest
    ) -> tuple[TenantConfig, ChatRequest, AdapterRecord | None]:
        """The model a request names, resolved: a tenant's A/B alias replaced by the model it sends this end
        user to, then the adapter ``<model>:<adapter>`` names (the request then runs on its base model); no
        fallback for either. The model checked to exist; a batch line goes to the lowest band."""
        alias = t.aliases.get(req.model)
        if alias is not None:
            req = replace(req, model=choose(alias, point(t.name, req.model, req.end_user or uuid.uuid4().hex)))
            t = t.model_copy(update={"allow_fallback": False})
        adapter: AdapterRecord | None = None
        base, adapter_name = split_model(req.model)
        if adapter_name is not None:
            self.adapter_model(t, base)
            try:
                adapter = await self.adapters.get(t.name, base, adapter_name)
            except NotFound:
                raise ModelNotFound(
                    f"model {req.model!r} does not exist: this tenant has no adapter {adapter_name!r} for {base!r} "
                    "(upload one with POST /v1/adapters)",
                    param="model",
                ) from None
            req = replace(req, model=base)
            t = t.model_copy(update={"allow_fallback": False})
        if req.model != AUTO and self.cfg.model(req.model) is None:
            names = [m.name for m in self.cfg.models] + sorted(t.aliases)
            raise ModelNotFound(f"model {req.model!r} does not exist; available: {names} or 'auto'", param="model")
        if req.batch:
            req = replace(req, priority=self.cfg.priorities.bands[-1])
        return t, req, adapter

    async def _place(self, t: TenantConfig, req: ChatRequest) -> tuple[list[list[int]], Placement]:
        """The request's checks, its prompts rendered (one per distinct prompt) and its placement. Token
        counts come from the requested model's tokenizer (for auto, the first one's: every gpt-oss model
        shares the o200k harmony vocab); rendered again if the placement changed the model or effort."""
        effort: ReasoningEffort = req.reasoning_effort or "medium"
        probe = req.model if req.model != AUTO else self.cfg.models[0].name
        await self.off_loop(t.name, check_request, req)
        distinct = req.choices()[:: req.n]  # one per prompt
        prompts = [await self.render_off_loop(t.name, probe, c, effort) for c in distinct]
        longest = max(len(p) for p in prompts)
        discount = self.cfg.batch.discount if req.batch else 0.0
        left = await self.budget_for_placement(t, req.model)
        placement = place(
            RouteRequest(req.model, longest, req.max_tokens, req.priority, effort, discount),
            tenant_policy(t, self.cfg.priorities, left),
            await self.options(req.model),
        )
        if placement.model != probe or placement.reasoning_effort != effort:
            effort = placement.reasoning_effort  # type: ignore[assignment]
            prompts = [await self.render_off_loop(t.name, placement.model, c, effort) for c in distinct]
        return prompts, placement

    async def _grammar(self, tenant: str, req: ChatRequest, placement: Placement) -> str | None:
        """The structured output's grammar, checked (off the loop) against the placed model's vocabulary."""
        if req.output_format is None:
            return None
        lark = grammar(req.output_format, placement.max_tokens, harmony=self.formats[placement.model].family.harmony)
        param = "tool_choice" if req.output_format.kind == "tool_call" else "response_format"
        await self.off_loop(tenant, self.grammars(placement.model).check, lark, param)
        return lark

    def grammars(self, model: str) -> Grammars:
        g = self._grammars.get(model)
        if g is None:
            g = self._grammars[model] = Grammars(self.renderers[model].tok)
        return g

    def _log_prompts(self, t: TenantConfig, plan: Admission) -> None:
        tok = self.renderers[plan.model].tok
        for rid, item in ((plan.request_id, plan.item), *((m.request_id, m.item) for m in plan.more)):
            prompt = tok.decode(item.prompt, skip_special_tokens=False)
            log.info("event=debug_prompt request_id=%s tenant=%s model=%s prompt=%r", rid, t.name, plan.model, prompt)

    async def cancel(self, tenant: str, request_id: str) -> str:
        return await self.queue.cancel(request_id, tenant)

    def cancel_abandoned(self, tenant: str, request_id: str) -> None:
        """Cancel a request whose client went away, from a task of its own.

        Called from the ``finally`` of a cancelled handler, where any await
        would be cancelled again (Starlette's cancel scopes are level-triggered),
        so the cancel must not run in the handler's task.
        """
        self.spawn(self._cancel_quietly(tenant, request_id))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task of its own, kept until it ends (never awaited by a request)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait until every background task (shadows, cancels, and what they start) has ended, then write the
        comparison's pending counters: for a caller that needs all of a request's effects (tests, benches)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.comparisons.flush()

    def observe(self, obs: Observation) -> None:
        """Count a request's end for the comparison (``control/comparison``), written within a second."""
        self.comparisons.add(obs)

    async def _shadow_quietly(self, t: TenantConfig, req: ChatRequest, sub: Submitted, cfg: ShadowConfig) -> None:
        try:
            await run_shadow(self, t, req, sub, cfg)
        except Exception as e:
            log.warning("event=shadow_failed request_id=%s tenant=%s error=%r", sub.request_id, t.name,
                        type(e).__name__)  # fmt: skip

    async def _cancel_quietly(self, tenant: str, request_id: str) -> None:
        try:
            await self.queue.cancel(request_id, tenant)
            log.info("event=abandoned_request_cancelled request_id=%s", request_id)
        except Exception as e:
            log.warning("event=abandoned_cancel_failed request_id=%s error=%r", request_id, type(e).__name__)

    async def depth(self, model: str) -> QueueDepth:
        return await self.queue.depth(model)

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.r.ping(), timeout=2))
        except Exception:
            return False
