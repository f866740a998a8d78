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
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ossfleet import metrics
from ossfleet.adapters import AdapterRecord, AdapterStore, check_name, split_model
from ossfleet.catalog import CATALOG
from ossfleet.config import ModelConfig, PlatformConfig, TenantConfig
from ossfleet.errors import (
    AuthenticationFailed,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    OssfleetError,
    PermissionDenied,
    RequestFailed,
)
from ossfleet.harmony import HarmonyRenderer, ReasoningEffort, raw_prompt_ids
from ossfleet.lora_format import AdapterInvalid, ModelShape, validate
from ossfleet.pricing import NANO_PER_USD, cost_nusd, with_surcharge
from ossfleet.protocol.chat import ChatRequest, check_request
from ossfleet.protocol.events import ENDED, TERMINAL, Outcome, StreamEvent, fold
from ossfleet.queue import Admission, GroupMember, QueueDepth, _s, queue_for, queue_model
from ossfleet.redisdb import connect_async
from ossfleet.router import AUTO, ModelLoad, ModelOption, Placement, RouteRequest, TenantPolicy, place
from ossfleet.storage import FileStorage
from ossfleet.streams import StreamHub
from ossfleet.structured import Grammars, grammar
from ossfleet.tasks import cancel_and_wait
from ossfleet.tenancy import authenticate, period_id
from ossfleet.tenants import TenantRegistry

log = logging.getLogger("ossfleet.gateway")
T = TypeVar("T")


@dataclass(frozen=True)
class Submitted:
    request_id: str
    placement: Placement
    input_tokens: int  # the group's, summed over its requests
    duplicate: bool
    request_ids: tuple[str, ...] = ()  # every choice's, in order; request_id is the first
    model: str = ""  # what responses name: the placed model, or "<model>:<adapter>"

    @property
    def model_name(self) -> str:
        return self.model or self.placement.model


class GatewayCore:
    def __init__(self, cfg: PlatformConfig, redis_url: str) -> None:
        from transformers import AutoTokenizer

        self.cfg = cfg
        self.r = connect_async(redis_url, cfg.redis)
        self.queue = queue_for(cfg, self.r)
        # Reads every stream this gateway relays with one XREAD on a connection of its own.
        self.hub = StreamHub(connect_async(redis_url, cfg.redis, max_connections=2))
        self.renderers: dict[str, HarmonyRenderer] = {}
        for m in cfg.models:
            self.renderers[m.name] = HarmonyRenderer(AutoTokenizer.from_pretrained(cfg.model_path(m)))
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

    def policy(self, t: TenantConfig, budget_left_nusd: int | None) -> TenantPolicy:
        bands = tuple(self.cfg.priorities.bands)
        return TenantPolicy(
            name=t.name,
            allowed_models=tuple(t.allowed_models),
            bands=bands,
            max_band=bands.index(t.max_band) if t.max_band else 0,
            default_band=bands.index(t.default_band or self.cfg.priorities.default),
            budget_left_nusd=budget_left_nusd,
            allow_fallback=t.allow_fallback,
            max_wait_s=t.max_wait_s,
        )

    async def load(self, model: str) -> ModelLoad:
        """Queue depth and live replicas of a model, read at most once a second."""
        now = time.monotonic()
        cached = self._loads.get(model)
        if cached and now - cached[0] < 1.0:
            return cached[1]
        depth = await self.queue.depth(model)
        replicas = await self.queue.replicas(model)
        rates = [r.get("requests_per_s", 0.0) for r in replicas.values()]
        load = ModelLoad(
            waiting=sum(depth.waiting),
            replicas=len(replicas),
            requests_per_s=sum(rates) / len(rates) if rates else 0.0,
            cold_start_s=self.cfg.autoscaling.cold_start_s,
        )
        self._loads[model] = (now, load)
        return load

    async def options(self, requested: str) -> list[ModelOption]:
        """The models a placement may choose from, with their load where it matters (auto)."""
        out = []
        for m in self.cfg.models:
            load = await self.load(m.name) if requested == AUTO else None
            out.append(ModelOption(m.name, CATALOG[m.spec].total_params, m.price, m.max_context, load))
        return out

    async def usage(self, t: TenantConfig, period: str | None = None) -> dict[str, Any]:
        """The tenant's spend, reservations, budget left and per-model usage in a period (default: this one)."""
        period = period or period_id(t.budget.period)
        budget: dict[Any, Any] = await self.r.hgetall(self.queue.keys.budget(t.name, period))
        raw: dict[Any, Any] = await self.r.hgetall(self.queue.keys.usage(t.name, period))
        b = {_s(k): int(v) for k, v in budget.items()}
        models: dict[str, dict[str, int]] = {}
        for k, v in raw.items():
            name, _, field = _s(k).rpartition(":")
            if name and field in ("requests", "input_tokens", "output_tokens"):
                models.setdefault(name, {"requests": 0, "input_tokens": 0, "output_tokens": 0})[field] = int(v)
        limit = round(t.budget.limit_usd * NANO_PER_USD)
        spent, reserved = b.get("spent", 0), b.get("reserved", 0)
        return {"spent_nusd": spent, "reserved_nusd": reserved, "left_nusd": limit - spent - reserved, "models": models}

    async def budget_left(self, t: TenantConfig) -> int:
        period = period_id(t.budget.period)
        reserved, spent = await self.r.hmget(self.queue.keys.budget(t.name, period), "reserved", "spent")
        limit = round(t.budget.limit_usd * NANO_PER_USD)
        left = limit - int(reserved or 0) - int(spent or 0)
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
            task = asyncio.get_running_loop().create_task(self._refresh_budget_gauge(t))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
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

    # -- submit ----------------------------------------------------------------------

    def render(self, model: str, req: ChatRequest, effort: ReasoningEffort) -> list[int]:
        renderer = self.renderers[model]
        if req.prompt is not None:
            return raw_prompt_ids(renderer.tok, req.prompt)
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
        """Place and admit one request; raises a typed error and changes nothing if refused."""
        try:
            sub = await self._submit(t, req)
        except OssfleetError as e:
            metrics.request(t.name, req.model, req.priority or t.default_band or self.cfg.priorities.default, e.code)
            raise
        band = self.cfg.priorities.bands[sub.placement.band]
        metrics.request(t.name, sub.placement.model, band, "duplicate" if sub.duplicate else "admitted")
        return sub

    def check_features(self, req: ChatRequest, model: str) -> None:
        """Refuse what the model's engine cannot do, and what cannot be combined, naming the field."""
        m = self.cfg.model(model)
        assert m is not None
        wanted = [f for f, on in (("response_format", req.output_format and req.output_format.kind != "tool_call"),
                                  ("tool_choice", req.output_format and req.output_format.kind == "tool_call"),
                                  ("logprobs", req.logprobs is not None)) if on]  # fmt: skip
        if wanted and not m.enforces_grammars():
            raise InvalidRequest(
                f"{wanted[0]} is not supported by model {model!r}, whose engine is {m.engine!r}; only ossfleet's "
                "batched engine and vLLM enforce grammars and return log-probabilities",
                param=wanted[0],
            )
        if req.output_format is not None and (req.min_tokens or req.ignore_eos):
            raise InvalidRequest(
                "min_tokens and ignore_eos cannot be combined with structured output, which ends when its value does",
                param="min_tokens" if req.min_tokens else "ignore_eos",
            )

    def grammars(self, model: str) -> Grammars:
        g = self._grammars.get(model)
        if g is None:
            g = self._grammars[model] = Grammars(self.renderers[model].tok)
        return g

    async def _submit(self, t: TenantConfig, req: ChatRequest) -> Submitted:
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
            # An adapter request runs on its own base model, whatever the tenant's fallback policy.
            req = replace(req, model=base)
            t = t.model_copy(update={"allow_fallback": False})
        if req.model != AUTO and self.cfg.model(req.model) is None:
            names = [m.name for m in self.cfg.models]
            raise ModelNotFound(f"model {req.model!r} does not exist; available: {names} or 'auto'", param="model")
        if req.batch:
            req = replace(req, priority=self.cfg.priorities.bands[-1])
        effort: ReasoningEffort = req.reasoning_effort or "medium"
        # Token counts come from the requested model's tokenizer (or, for auto,
        # the first one: every gpt-oss model shares the o200k harmony vocab).
        probe = req.model if req.model != AUTO else self.cfg.models[0].name
        await self.off_loop(t.name, check_request, req)
        choices = req.choices()
        distinct = choices[:: req.n]  # one per prompt
        prompts = [await self.render_off_loop(t.name, probe, c, effort) for c in distinct]
        longest = max(range(len(prompts)), key=lambda i: len(prompts[i]))
        left = await self.budget_for_placement(t, req.model)
        placement = place(
            RouteRequest(
                req.model,
                len(prompts[longest]),
                req.max_tokens,
                req.priority,
                effort,
                self.cfg.batch.discount if req.batch else 0.0,
            ),
            self.policy(t, left),
            await self.options(req.model),
        )
        if placement.model != probe or placement.reasoning_effort != effort:
            prompts = [
                await self.render_off_loop(t.name, placement.model, c, placement.reasoning_effort)  # type: ignore[arg-type]
                for c in distinct
            ]
        self.check_features(req, placement.model)
        lark = None
        if req.output_format is not None:
            lark = grammar(req.output_format, placement.max_tokens)
            param = "tool_choice" if req.output_format.kind == "tool_call" else "response_format"
            await self.off_loop(t.name, self.grammars(placement.model).check, lark, param)
        model_cfg = self.cfg.model(placement.model)
        assert model_cfg is not None
        discount = self.cfg.batch.discount if req.batch else 0.0
        price = model_cfg.price if adapter is None else with_surcharge(model_cfg.price, model_cfg.adapters.surcharge)
        members = []
        for i, c in enumerate(choices):
            prompt = prompts[i // req.n]
            payload: dict[str, Any] = {
                "prompt": prompt,
                "max_tokens": placement.max_tokens,
                "temperature": c.temperature,
                "top_p": c.top_p,
                "top_k": c.top_k,
                "seed": c.seed,
                "stop": list(c.stop),
                "min_tokens": min(c.min_tokens, placement.max_tokens),
                "ignore_eos": c.ignore_eos,
                "raw": c.prompt is not None,
            }
            if lark is not None:
                payload["grammar"] = lark
            if c.logprobs is not None:
                payload["logprobs"] = c.logprobs
            if req.batch:
                payload["discount"] = discount
            if adapter is not None:
                payload["adapter"] = {"key": adapter.key, "path": adapter.path}
            reserve = cost_nusd(price, len(prompt), placement.max_tokens, discount)
            members.append(GroupMember(uuid.uuid4().hex, payload, len(prompt), placement.max_tokens, reserve))
        if t.debug_logging:  # the tenant asked for its prompts in the logs
            for m in members:
                log.info(
                    "event=debug_prompt request_id=%s tenant=%s model=%s prompt=%r",
                    m.request_id,
                    t.name,
                    placement.model,
                    self.renderers[placement.model].tok.decode(m.payload["prompt"], skip_special_tokens=False),
                )
        first = members[0]
        admitted = await self.queue.admit(
            Admission(
                request_id=first.request_id,
                tenant=t.name,
                model=placement.model,
                band=placement.band,
                payload=first.payload,
                input_tokens=first.input_tokens,
                max_tokens=placement.max_tokens,
                reserve_nusd=first.reserve_nusd,
                budget_limit_nusd=round(t.budget.limit_usd * NANO_PER_USD),
                alert_at_nusd=round(t.budget.limit_usd * t.budget.soft_alert_fraction * NANO_PER_USD),
                max_inflight=0 if req.batch else t.limits.max_concurrent_streams,
                track_inflight=not req.batch,
                count_rate=not req.batch,
                period=period_id(t.budget.period),
                rpm=t.limits.rpm,
                tpm=t.limits.tpm,
                weight=t.weight,
                idempotency_key=req.idempotency_key,
                more=tuple(members[1:]),
                adapter=adapter.key if adapter is not None else "",
                usage_name=adapter.id if adapter is not None else "",
            )
        )
        input_tokens = sum(m.input_tokens for m in members)
        log.info(
            "event=admitted request_id=%s tenant=%s model=%s band=%d input_tokens=%d choices=%d duplicate=%s",
            admitted.request_id,
            t.name,
            placement.model,
            placement.band,
            input_tokens,
            len(members),
            admitted.duplicate,
        )
        return Submitted(
            admitted.request_id, placement, input_tokens, admitted.duplicate, admitted.request_ids,
            adapter.id if adapter is not None else placement.model,
        )  # fmt: skip

    # -- results ---------------------------------------------------------------------

    async def events(
        self, model: str, request_id: str, after: str = "0-0", labels: tuple[str, str] | None = None
    ) -> AsyncIterator[StreamEvent]:
        """The events of ``model``'s request (a model's name, or ``<model>:<adapter>``) from entry ``after``
        on, until its terminal event.

        A retried request (its replica died) streams again from its first
        token; events whose ``seq`` was already delivered are skipped, so a
        reader sees each chunk once. With ``labels`` (tenant, model) the
        stream's latencies and its end are recorded as metrics.
        """
        delivered = -1
        last = time.monotonic()
        first = True
        model = queue_model(model)
        key = self.queue.keys.stream(model, request_id)
        while True:
            batch = await self.hub.read(key, after, timeout_s=2.0)
            if not batch:
                state = await self.queue.state(model, request_id)
                if state is None:  # the request record expired (or never existed): nothing will come
                    raise RequestFailed(f"request {request_id} is no longer known")
                if state in ENDED and after != "0-0":
                    # Its terminal event was written with its end. A reader resuming past it has it all;
                    # otherwise it is in Redis (the hub's read may have timed out just as it came).
                    batch = await self.queue.read_stream(model, request_id, after, block_ms=None)
                    if not batch:
                        return
            for ev in batch:
                after = ev.entry_id
                if ev.type == "delta":
                    seq = int(ev.fields.get("seq", "0"))
                    if seq <= delivered:
                        continue
                    delivered = seq
                if labels is not None:
                    last, first = _record(ev, labels, last, first)
                yield ev
                if ev.type in TERMINAL:
                    return

    async def merged_events(
        self,
        model: str,
        request_ids: Sequence[str],
        labels: tuple[str, str] | None = None,
        after: Sequence[str] | None = None,
    ) -> AsyncIterator[tuple[int, StreamEvent]]:
        """The events of several requests (the choices of one), each as (its index, event), as they come,
        each request's from its entry in ``after`` on; each request's own order is kept. An error reading
        one ends the whole iteration with it."""
        starts = list(after or ["0-0"] * len(request_ids))
        if len(request_ids) == 1:
            async for ev in self.events(model, request_ids[0], starts[0], labels=labels):
                yield 0, ev
            return
        q: asyncio.Queue[tuple[int, StreamEvent | None, BaseException | None]] = asyncio.Queue()

        async def pump(i: int, rid: str) -> None:
            try:
                async for ev in self.events(model, rid, starts[i], labels=labels):
                    await q.put((i, ev, None))
                await q.put((i, None, None))
            except Exception as e:
                await q.put((i, None, e))

        tasks = [asyncio.create_task(pump(i, rid)) for i, rid in enumerate(request_ids)]
        try:
            open_ = len(tasks)
            while open_:
                i, item, err = await q.get()
                if err is not None:
                    raise err
                if item is None:
                    open_ -= 1
                    continue
                yield i, item
        finally:
            for t in tasks:
                await cancel_and_wait(t)

    async def outcomes_or_cancel(
        self, tenant: str, request_ids: Sequence[str], model: str, cancel: bool = True
    ) -> list[Outcome]:
        """The finished requests (in order); if the caller goes away first, every one not finished is
        cancelled (unless not ``cancel``)."""
        outs = [Outcome() for _ in request_ids]
        done: set[int] = set()
        try:
            async for i, ev in self.merged_events(model, request_ids, (tenant, model)):
                fold(outs[i], ev)
                if ev.type in TERMINAL:
                    done.add(i)
            return outs
        finally:
            for i, rid in enumerate(request_ids):
                if i not in done and cancel:
                    self.cancel_abandoned(tenant, rid)

    async def outcome(self, model: str, request_id: str, labels: tuple[str, str] | None = None) -> Outcome:
        out = Outcome()
        async for ev in self.events(model, request_id, labels=labels):
            fold(out, ev)
        return out

    async def outcome_or_cancel(self, tenant: str, request_id: str, model: str) -> Outcome:
        """The finished request; if the caller goes away first, the request is cancelled."""
        return (await self.outcomes_or_cancel(tenant, [request_id], model))[0]

    async def cancel(self, tenant: str, request_id: str) -> str:
        return await self.queue.cancel(request_id, tenant)

    def cancel_abandoned(self, tenant: str, request_id: str) -> None:
        """Cancel a request whose client went away, from a task of its own.

        Called from the ``finally`` of a cancelled handler, where any await
        would be cancelled again (Starlette's cancel scopes are level-triggered),
        so the cancel must not run in the handler's task.
        """
        task = asyncio.get_running_loop().create_task(self._cancel_quietly(tenant, request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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


def _record(ev: StreamEvent, labels: tuple[str, str], last: float, first: bool) -> tuple[float, bool]:
    """Metrics for one delivered event: first-token and inter-token latency, the request's end."""
    tenant, model = labels
    now = time.monotonic()
    if ev.type == "delta":
        (metrics.time_to_first_token if first else metrics.inter_token)(model, now - last)
        return now, False
    if ev.type == "done":
        f = ev.fields
        metrics.finished(
            tenant,
            model,
            f.get("finish_reason", "stop"),
            int(f.get("cost_nusd", 0)) / NANO_PER_USD,
            int(f.get("output_tokens", 0)),
        )
    elif ev.type == "error":
        metrics.finished(tenant, model, "error", 0.0, 0)
    return last, first
