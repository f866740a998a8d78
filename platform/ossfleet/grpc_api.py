"""The gRPC API (``ossfleet.v1.Ossfleet``) over the gateway core.

Each RPC is the method of the same name in snake case (``GenerateStream``:
``generate_stream``), called by the gateway's own gRPC server
(``grpc_server.py``) or by Ray Serve's gRPC proxy through the Gateway
deployment's methods named after the RPCs. Authentication comes from the ``authorization``
metadata. A refused request ends with the gRPC status its error names
(UNAUTHENTICATED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED with a ``retry-after``
trailer, NOT_FOUND, PERMISSION_DENIED, UNAVAILABLE) and a message saying what
to fix; like the HTTP API, it changes nothing in Redis.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ossfleet import jsonlimits
from ossfleet.adapters import AdapterRecord
from ossfleet.admin_api import AdminService
from ossfleet.batch.service import BatchService
from ossfleet.batch.store import Job
from ossfleet.errors import InvalidRequest, NotFound, OssfleetError, RequestTooLarge, from_unexpected
from ossfleet.gateway import GatewayCore
from ossfleet.harmony import Message, Tool, ToolCall
from ossfleet.pricing import NANO_PER_USD
from ossfleet.protocol.chat import ChatRequest, validate_messages
from ossfleet.protocol.events import Outcome, fold, stream_position
from ossfleet.structured import OutputFormat, forced_tools
from ossfleet.tenancy import period_id
from ossfleet.v1 import admin_pb2 as apb
from ossfleet.v1 import ossfleet_pb2 as pb

log = logging.getLogger("ossfleet.grpc")

SERVICER_FUNCTION = "ossfleet.v1.ossfleet_pb2_grpc.add_OssfleetServicer_to_server"
ADMIN_SERVICER_FUNCTION = "ossfleet.v1.admin_pb2_grpc.add_AdminServicer_to_server"
# Both services, as Serve's gRPC proxy takes them (the gateway deployment implements both).
SERVICER_FUNCTIONS = [SERVICER_FUNCTION, ADMIN_SERVICER_FUNCTION]
ROLES = ("system", "developer", "user", "assistant", "tool")
EFFORTS = ("", "low", "medium", "high")


def metadata(ctx: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in ctx.invocation_metadata()}


def status_of(e: OssfleetError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The gRPC status an ossfleet error ends a call with: code, message, trailers (``retry-after``)."""
    headers = e.headers()
    trailers = (("retry-after", headers["retry-after"]),) if "retry-after" in headers else ()
    return getattr(grpc.StatusCode, e.grpc_code), e.message, trailers


def abort_with(ctx: Any, e: OssfleetError) -> None:
    """Put an ossfleet error on the call as its status.

    A unary method then returns; a streaming one re-raises, since Ray Serve
    carries a stream's status to the client only when the method raises (the
    gateway's own server turns that raise into the same status: grpc_server.py).
    """
    code, details, trailers = status_of(e)
    ctx.set_code(code)
    ctx.set_details(details)
    if trailers:
        ctx.set_trailing_metadata(trailers)


def to_chat(req: pb.GenerateRequest, md: dict[str, str], max_tokens_limit: int, max_messages: int) -> ChatRequest:
    msgs = []
    for i, m in enumerate(req.messages):
        if m.role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role must be one of {list(ROLES)}", param=f"messages[{i}].role")
        calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in m.tool_calls)
        msgs.append(Message(m.role, m.content, m.reasoning or None, calls, m.name or None, m.tool_call_id or None))
    validate_messages(msgs, max_messages)
    if not req.model:
        raise InvalidRequest("model is required", param="model")
    max_tokens = req.max_tokens or min(1024, max_tokens_limit)
    if max_tokens > max_tokens_limit:
        raise InvalidRequest(f"max_tokens {max_tokens} is above the limit of {max_tokens_limit}", param="max_tokens")
    if req.reasoning_effort not in EFFORTS:
        raise InvalidRequest("reasoning_effort must be low, medium or high", param="reasoning_effort")
    temperature = req.temperature if req.HasField("temperature") else 1.0
    top_p = req.top_p if req.HasField("top_p") else 1.0
    if not 0 <= temperature <= 2:
        raise InvalidRequest("temperature must lie in [0, 2]", param="temperature")
    if not 0 < top_p <= 1:
        raise InvalidRequest("top_p must lie in (0, 1]", param="top_p")
    if len(req.stop) > 4:
        raise InvalidRequest("at most 4 stop sequences", param="stop")
    tools = []
    for t in req.tools:
        params = (
            jsonlimits.loads(t.parameters_json, f"tool {t.name!r}: parameters_json", "tools")
            if (t.parameters_json)
            else {}
        )
        if not isinstance(params, dict):
            raise InvalidRequest(f"tool {t.name!r}: parameters_json must be a JSON object", param="tools")
        tools.append(Tool(t.name, t.description, params))
    if req.tool_choice == "none":
        tools = []
    if req.top_logprobs and not req.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs", param="top_logprobs")
    if req.top_logprobs > 20:
        raise InvalidRequest("top_logprobs must be at most 20", param="top_logprobs")
    return ChatRequest(
        model=req.model,
        messages=msgs,
        max_tokens=max_tokens,
        tools=tuple(tools),
        reasoning_effort=req.reasoning_effort or None,  # type: ignore[arg-type]
        temperature=temperature,
        top_p=top_p,
        top_k=req.top_k if req.HasField("top_k") else 0,
        seed=req.seed if req.HasField("seed") else None,
        stop=tuple(req.stop),
        min_tokens=req.min_tokens,
        ignore_eos=req.ignore_eos,
        priority=req.priority or md.get("x-ossfleet-priority") or None,
        idempotency_key=(req.idempotency_key or md.get("idempotency-key", ""))[:128],
        output_format=output_format(req, tuple(tools)),
        logprobs=req.top_logprobs if req.logprobs else None,
        n=max(1, req.n),
    )


def output_format(req: pb.GenerateRequest, tools: tuple[Tool, ...]) -> OutputFormat | None:
    """What the answer must be, from ``tool_choice`` and ``response_format`` (as the HTTP API reads them)."""
    forced = forced_tools(tools, req.tool_choice or None)
    kind = req.response_format.type if req.HasField("response_format") else ""
    if forced:
        if kind not in ("", "text"):
            raise InvalidRequest("a forced tool call and a JSON response_format cannot both shape one answer",
                                 param="tool_choice")  # fmt: skip
        return OutputFormat("tool_call", tools=forced)
    if kind in ("", "text"):
        return None
    if kind == "json_object":
        return OutputFormat("json_object")
    if kind != "json_schema":
        raise InvalidRequest("response_format.type must be text, json_object or json_schema", param="response_format")
    schema = jsonlimits.loads(req.response_format.schema_json, "response_format.schema_json", "response_format")
    if not isinstance(schema, dict):
        raise InvalidRequest("response_format.schema_json must be a JSON object", param="response_format")
    return OutputFormat("json_schema", schema=schema)


def _logprobs(entries: list[dict[str, Any]]) -> list[pb.TokenLogprob]:
    return [
        pb.TokenLogprob(
            token=e["token"], logprob=e["logprob"], bytes=bytes(e["bytes"]),
            top_logprobs=[pb.TopLogprob(token=t["token"], logprob=t["logprob"], bytes=bytes(t["bytes"]))
                          for t in e["top_logprobs"]],
        )
        for e in entries
    ]  # fmt: skip


def _calls(o: Outcome) -> list[pb.ToolCall]:
    return [pb.ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"]) for c in o.tool_calls]


def _usage(*outs: Outcome) -> pb.Usage:
    return pb.Usage(
        input_tokens=sum(o.input_tokens for o in outs),
        output_tokens=sum(o.output_tokens for o in outs),
        cost_usd=sum(o.cost_nusd for o in outs) / NANO_PER_USD,
    )


def guarded(empty: Callable[[], Any] | None = None) -> Callable[[Any], Any]:
    """Unexpected exceptions leave a method as a typed status, never as a traceback.

    Redis unreachable: UNAVAILABLE; anything else: INTERNAL with an error id (the
    traceback is logged under it). A unary method returns ``empty()`` with the
    status set; a streaming one (``empty`` None) raises, as Serve needs.
    """

    def wrap(method: Any) -> Any:
        if inspect.isasyncgenfunction(method):

            @functools.wraps(method)
            async def stream(self: Any, req: Any, ctx: Any) -> AsyncIterator[Any]:
                try:
                    async for item in method(self, req, ctx):
                        yield item
                except OssfleetError:
                    raise
                except Exception as e:
                    err = from_unexpected(e, log, method.__name__)
                    abort_with(ctx, err)
                    raise err from None

            return stream

        @functools.wraps(method)
        async def unary(self: Any, req: Any, ctx: Any) -> Any:
            try:
                return await method(self, req, ctx)
            except Exception as e:
                abort_with(ctx, from_unexpected(e, log, method.__name__))
                return empty() if empty is not None else None

        return unary

    return wrap


class GrpcApi:
    def __init__(self, core: GatewayCore, batches: BatchService) -> None:
        self.core = core
        self.batches = batches

    def _chat(self, req: pb.GenerateRequest, md: dict[str, str]) -> ChatRequest:
        lim = self.core.cfg.limits
        size = req.ByteSize()
        if size > lim.max_request_bytes:
            raise RequestTooLarge(
                f"request is {size} bytes; the limit is {lim.max_request_bytes} (limits.max_request_bytes)"
            )
        chat = to_chat(req, md, lim.max_tokens, lim.max_messages)
        if chat.n > lim.max_choices:
            raise InvalidRequest(f"n ({chat.n}) asks for more completions than the limit of {lim.max_choices}",
                                 param="n")  # fmt: skip
        return chat

    @guarded(pb.GenerateResponse)
    async def generate(self, req: pb.GenerateRequest, ctx: Any) -> pb.GenerateResponse:
        md = metadata(ctx)
        try:
            tenant = await self.core.tenant(md.get("authorization"))
            sub = await self.core.submit(tenant, self._chat(req, md))
            rids = list(sub.request_ids or (sub.request_id,))
            outs = await self.core.outcomes_or_cancel(tenant.name, rids, sub.model_name)
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.GenerateResponse()
        out = outs[0]
        choices = [
            pb.Choice(
                index=i, request_id=rid, content=o.content, reasoning=o.reasoning, tool_calls=_calls(o),
                finish_reason=o.finish_reason, logprobs=_logprobs(o.logprobs),
            )
            for i, (rid, o) in enumerate(zip(rids, outs, strict=True))
        ]  # fmt: skip
        return pb.GenerateResponse(
            request_id=sub.request_id,
            model=sub.model_name,
            content=out.content,
            reasoning=out.reasoning,
            tool_calls=_calls(out),
            finish_reason=out.finish_reason,
            usage=_usage(*outs),
            logprobs=_logprobs(out.logprobs),
            choices=choices,
        )

    @guarded()
    async def generate_stream(self, req: pb.GenerateRequest, ctx: Any) -> AsyncIterator[pb.GenerateChunk]:
        md = metadata(ctx)
        try:
            tenant = await self.core.tenant(md.get("authorization"))
            sub = await self.core.submit(tenant, self._chat(req, md))
        except OssfleetError as e:
            abort_with(ctx, e)
            raise
        # A client that drops a stream does not cancel it: the request runs on and
        # its chunks wait in Redis (stream_ttl_s) for ResumeStream. Cancel cancels.
        rids = list(sub.request_ids or (sub.request_id,))
        async for chunk in self._chunks(rids, sub.model_name, "0-0", ctx, tenant.name):
            yield chunk

    @guarded()
    async def resume_stream(self, req: pb.ResumeRequest, ctx: Any) -> AsyncIterator[pb.GenerateChunk]:
        md = metadata(ctx)
        try:
            tenant = await self.core.tenant(md.get("authorization"))
            model = await self.core.queue.locate(tenant.name, req.request_id)
            state = await self.core.queue.request_state(model, req.request_id) if model else {}
            if state.get("tenant") != tenant.name:  # another tenant's request is reported as missing
                raise NotFound(f"no request {req.request_id!r} for this tenant")
            cursor = stream_position(req.cursor, "cursor") if req.cursor else "0-0"
        except OssfleetError as e:
            abort_with(ctx, e)
            raise
        async for chunk in self._chunks([req.request_id], state.get("model", ""), cursor, ctx):
            yield chunk

    async def _chunks(
        self, rids: list[str], model: str, after: str, ctx: Any, tenant: str | None = None
    ) -> AsyncIterator[pb.GenerateChunk]:
        """The chunks of a request's choices (one choice: from entry ``after`` on), each under its own id."""
        outs = [Outcome() for _ in rids]
        labels = (tenant, model) if tenant else None
        events: AsyncIterator[tuple[int, Any]]
        if len(rids) == 1:
            events = ((0, ev) async for ev in self.core.events(model, rids[0], after, labels))
        else:
            events = self.core.merged_events(model, rids, labels)
        try:
            async for i, ev in events:
                fold(outs[i], ev)
                f = ev.fields
                base: dict[str, Any] = {"request_id": rids[i], "model": model, "cursor": ev.entry_id, "index": i}
                if ev.type == "delta":
                    kind = f.get("kind")
                    if kind == "content":
                        lps = _logprobs(json.loads(f["logprobs"])) if f.get("logprobs") else []
                        yield pb.GenerateChunk(**base, content=f.get("text", ""), logprobs=lps)
                    elif kind == "reasoning":
                        yield pb.GenerateChunk(**base, reasoning=f.get("text", ""))
                    elif kind == "tool_call":
                        call = pb.ToolCall(id=f["id"], name=f["name"], arguments=f["arguments"])
                        yield pb.GenerateChunk(**base, tool_call=call)
                elif ev.type == "done":
                    yield pb.GenerateChunk(**base, finish_reason=outs[i].finish_reason, usage=_usage(outs[i]))
        except OssfleetError as e:
            abort_with(ctx, e)
            raise

    @guarded(pb.CancelResponse)
    async def cancel(self, req: pb.CancelRequest, ctx: Any) -> pb.CancelResponse:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
            return pb.CancelResponse(status=await self.core.cancel(tenant.name, req.request_id))
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.CancelResponse()

    @guarded(pb.ListModelsResponse)
    async def list_models(self, req: pb.ListModelsRequest, ctx: Any) -> pb.ListModelsResponse:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.ListModelsResponse()
        names = [m.name for m in self.core.cfg.models] + ["auto"]
        names += [a.id for a in await self.core.adapters.list(tenant.name)]  # the caller's own adapters
        return pb.ListModelsResponse(models=[pb.Model(id=n) for n in names])

    @guarded(pb.GetUsageResponse)
    async def get_usage(self, req: pb.GetUsageRequest, ctx: Any) -> pb.GetUsageResponse:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.GetUsageResponse()
        u = await self.core.usage(tenant)
        return pb.GetUsageResponse(
            tenant=tenant.name,
            period=period_id(tenant.budget.period),
            budget_usd=tenant.budget.limit_usd,
            spent_usd=u["spent_nusd"] / NANO_PER_USD,
            reserved_usd=u["reserved_nusd"] / NANO_PER_USD,
            budget_left_usd=max(0, u["left_nusd"]) / NANO_PER_USD,
            models=[pb.ModelUsage(model=m, **v) for m, v in u["models"].items()],
        )

    # -- batch jobs --------------------------------------------------------------------------

    @guarded(pb.Batch)
    async def submit_batch(self, req: pb.SubmitBatchRequest, ctx: Any) -> pb.Batch:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
            batches = self.batches
            file_id = req.input_file_id
            if bool(req.input) == bool(file_id):
                raise InvalidRequest("give the input inline (input) or an uploaded file (input_file_id), one of them")
            if req.input:
                file_id = (await batches.upload(tenant, "grpc-input.jsonl", "batch", req.input)).id
            job = await batches.create(
                tenant, file_id, req.endpoint or "/v1/chat/completions", req.completion_window or "24h",
                metadata=dict(req.metadata) or None, mode=req.mode or "queue",
                skip_invalid_lines=req.skip_invalid_lines,
            )  # fmt: skip
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.Batch()
        return batch_pb(job)

    @guarded(pb.Batch)
    async def get_batch(self, req: pb.GetBatchRequest, ctx: Any) -> pb.Batch:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
            return batch_pb(await self.batches.get(tenant, req.batch_id))
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.Batch()

    @guarded(pb.ListBatchesResponse)
    async def list_batches(self, req: pb.ListBatchesRequest, ctx: Any) -> pb.ListBatchesResponse:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
            jobs, more = await self.batches.jobs(tenant, req.limit or 20, req.after or None)
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.ListBatchesResponse()
        return pb.ListBatchesResponse(batches=[batch_pb(j) for j in jobs], has_more=more)

    @guarded(pb.Batch)
    async def cancel_batch(self, req: pb.GetBatchRequest, ctx: Any) -> pb.Batch:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
            return batch_pb(await self.batches.cancel(tenant, req.batch_id))
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.Batch()

    # -- LoRA adapters -----------------------------------------------------------------------

    @guarded(pb.Adapter)
    async def upload_adapter(self, req: pb.UploadAdapterRequest, ctx: Any) -> pb.Adapter:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
            rec = await self.core.upload_adapter(tenant, req.model, req.name, req.adapter_config, req.adapter_model)
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.Adapter()
        return _adapter_pb(rec)

    @guarded(pb.ListAdaptersResponse)
    async def list_adapters(self, req: pb.ListAdaptersRequest, ctx: Any) -> pb.ListAdaptersResponse:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.ListAdaptersResponse()
        return pb.ListAdaptersResponse(adapters=[_adapter_pb(a) for a in await self.core.adapters.list(tenant.name)])

    @guarded(pb.Adapter)
    async def delete_adapter(self, req: pb.AdapterRequest, ctx: Any) -> pb.Adapter:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
            rec = await self.core.adapter(tenant, req.id)
            await self.core.adapters.delete(tenant.name, rec.model, rec.name)
        except OssfleetError as e:
            abort_with(ctx, e)
            return pb.Adapter()
        out = _adapter_pb(rec)
        out.deleted = True
        return out

    @guarded()
    async def get_batch_results(self, req: pb.GetBatchResultsRequest, ctx: Any) -> AsyncIterator[pb.FileChunk]:
        try:
            tenant = await self.core.tenant(metadata(ctx).get("authorization"))
            job = await self.batches.get(tenant, req.batch_id)
            file_id = job.error_file_id if req.errors else job.output_file_id
            if not file_id:
                what = "error" if req.errors else "output"
                raise NotFound(f"batch {job.id} has no {what} file (status {job.status})", param="batch_id")
            data = await self.batches.content(tenant, file_id)
        except OssfleetError as e:
            abort_with(ctx, e)
            raise
        for i in range(0, len(data), RESULT_CHUNK):
            yield pb.FileChunk(data=data[i : i + RESULT_CHUNK])


RESULT_CHUNK = 1 << 20


def batch_pb(job: Job) -> pb.Batch:
    return pb.Batch(
        id=job.id, status=job.status, mode=job.mode, endpoint=job.endpoint, input_file_id=job.input_file_id,
        output_file_id=job.output_file_id, error_file_id=job.error_file_id,
        completion_window=job.completion_window, created_at=job.created_at, expires_at=job.expires_at,
        total=job.total, completed=job.completed, failed=job.failed,
        errors=[pb.BatchError(code=e.get("code", ""), message=e.get("message", ""), line=int(e.get("line") or 0))
                for e in job.errors],
        metadata=job.metadata or {}, timestamps=job.stamps, status_message=job.status_message,
    )  # fmt: skip


# -- ossfleet.admin.v1.Admin ----------------------------------------------------------------------


def _usage_pb(u: dict[str, Any]) -> apb.Usage:
    return apb.Usage(
        period=u["period"], budget_usd=u["budget_usd"], spent_usd=u["spent_usd"], reserved_usd=u["reserved_usd"],
        left_usd=u["left_usd"], models_json=json.dumps(u["models"]),
    )  # fmt: skip


def _adapter_pb(a: AdapterRecord) -> pb.Adapter:
    return pb.Adapter(
        id=a.id, model=a.model, name=a.name, rank=a.rank, lora_alpha=a.alpha, target_modules=list(a.modules),
        bytes=a.nbytes, sha256=a.digest, created_at=a.created_at,
    )  # fmt: skip


def _tenant_pb(body: dict[str, Any]) -> apb.Tenant:
    config = {k: v for k, v in body.items() if k != "usage"}
    return apb.Tenant(name=body["name"], config_json=json.dumps(config), usage=_usage_pb(body["usage"]))


def _fields(raw: str) -> Any:
    return jsonlimits.loads(raw, "fields_json", "fields_json") if raw else {}


class AdminGrpc:
    """``ossfleet.admin.v1.Admin``: the admin API's operations (``AdminService``) over gRPC."""

    def __init__(self, core: GatewayCore, batches: BatchService) -> None:
        self.svc = AdminService(core, batches)

    async def _call(self, ctx: Any, empty: Callable[[], Any], op: Callable[[str], Any]) -> Any:
        try:
            actor = await self.svc.authenticate(metadata(ctx).get("authorization"))
            return await op(actor)
        except OssfleetError as e:
            abort_with(ctx, e)
            return empty()

    @guarded(apb.TenantList)
    async def list_tenants(self, req: apb.ListTenantsRequest, ctx: Any) -> apb.TenantList:
        async def op(actor: str) -> apb.TenantList:
            return apb.TenantList(tenants=[_tenant_pb(t) for t in await self.svc.list_tenants()])

        return await self._call(ctx, apb.TenantList, op)

    @guarded(apb.Tenant)
    async def get_tenant(self, req: apb.TenantRequest, ctx: Any) -> apb.Tenant:
        async def op(actor: str) -> apb.Tenant:
            return _tenant_pb(await self.svc.get_tenant(req.name, req.period or None))

        return await self._call(ctx, apb.Tenant, op)

    @guarded(apb.Tenant)
    async def create_tenant(self, req: apb.TenantChange, ctx: Any) -> apb.Tenant:
        async def op(actor: str) -> apb.Tenant:
            fields = _fields(req.fields_json)
            if isinstance(fields, dict) and req.name:
                fields = {**fields, "name": req.name}
            return _tenant_pb(await self.svc.create_tenant(fields, actor))

        return await self._call(ctx, apb.Tenant, op)

    @guarded(apb.Tenant)
    async def update_tenant(self, req: apb.TenantChange, ctx: Any) -> apb.Tenant:
        async def op(actor: str) -> apb.Tenant:
            return _tenant_pb(await self.svc.update_tenant(req.name, _fields(req.fields_json), actor))

        return await self._call(ctx, apb.Tenant, op)

    @guarded(apb.DeleteTenantResponse)
    async def delete_tenant(self, req: apb.TenantRequest, ctx: Any) -> apb.DeleteTenantResponse:
        async def op(actor: str) -> apb.DeleteTenantResponse:
            out = await self.svc.delete_tenant(req.name, actor)
            return apb.DeleteTenantResponse(name=out["name"], keys_revoked=out["keys_revoked"], removed=out["removed"])

        return await self._call(ctx, apb.DeleteTenantResponse, op)

    @guarded(apb.NewKey)
    async def create_key(self, req: apb.TenantRequest, ctx: Any) -> apb.NewKey:
        async def op(actor: str) -> apb.NewKey:
            return apb.NewKey(**await self.svc.create_key(req.name, actor))

        return await self._call(ctx, apb.NewKey, op)

    @guarded(apb.KeyList)
    async def list_keys(self, req: apb.TenantRequest, ctx: Any) -> apb.KeyList:
        async def op(actor: str) -> apb.KeyList:
            keys = await self.svc.list_keys(req.name)
            return apb.KeyList(keys=[apb.KeyRef(tenant=req.name, digest_prefix=k["digest_prefix"]) for k in keys])

        return await self._call(ctx, apb.KeyList, op)

    @guarded(apb.KeyRef)
    async def revoke_key(self, req: apb.RevokeKeyRequest, ctx: Any) -> apb.KeyRef:
        async def op(actor: str) -> apb.KeyRef:
            out = await self.svc.revoke_key(req.name, req.digest_prefix, actor)
            return apb.KeyRef(tenant=out["tenant"], digest_prefix=out["digest_prefix"])

        return await self._call(ctx, apb.KeyRef, op)

    @guarded(apb.Spend)
    async def get_spend(self, req: apb.SpendRequest, ctx: Any) -> apb.Spend:
        async def op(actor: str) -> apb.Spend:
            rows = await self.svc.usage(req.period or None)
            return apb.Spend(tenants=[apb.TenantSpend(name=r["name"], usage=_usage_pb(r)) for r in rows])

        return await self._call(ctx, apb.Spend, op)

    @guarded(apb.Queues)
    async def get_queues(self, req: apb.QueuesRequest, ctx: Any) -> apb.Queues:
        async def op(actor: str) -> apb.Queues:
            q = await self.svc.queues()
            models = [
                apb.ModelQueue(
                    model=m["model"], waiting=m["waiting"], oldest_wait_s=m["oldest_wait_s"], running=m["running"],
                    replicas=[apb.Replica(id=r["id"], load_json=json.dumps({k: v for k, v in r.items() if k != "id"}))
                              for r in m["replicas"]],
                )
                for m in q["models"]
            ]  # fmt: skip
            return apb.Queues(bands=q["bands"], models=models)

        return await self._call(ctx, apb.Queues, op)

    @guarded(apb.Audit)
    async def read_audit(self, req: apb.AuditRequest, ctx: Any) -> apb.Audit:
        async def op(actor: str) -> apb.Audit:
            rows = await self.svc.audit(req.count or 50)
            return apb.Audit(entries=[apb.AuditEntry(id=r.pop("id"), fields=r) for r in rows])

        return await self._call(ctx, apb.Audit, op)
