"""The gRPC inference API (``ossfleet.v1.Ossfleet``) over the gateway core.

Each RPC is the method of the same name in snake case (``GenerateStream``:
``generate_stream``), called by the gateway's own gRPC server
(``grpc_server.py``) or by Ray Serve's gRPC proxy through the Gateway
deployment's methods named after the RPCs. Every method passes through one
interceptor (``grpc_common.rpc``): authentication from the ``authorization``
metadata, typed statuses. A refused request ends with the gRPC status its error names
(UNAUTHENTICATED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED with a ``retry-after``
trailer, NOT_FOUND, PERMISSION_DENIED, UNAVAILABLE) and a message saying what
to fix; like the HTTP API, it changes nothing in Redis.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from ossfleet import jsonlimits
from ossfleet.adapters.store import AdapterRecord
from ossfleet.api.grpc_common import Call, rpc
from ossfleet.batch.service import BatchService
from ossfleet.batch.store import Job
from ossfleet.config import TenantConfig
from ossfleet.control.budget import period_id
from ossfleet.control.gateway import GatewayCore
from ossfleet.control.pricing import NANO_PER_USD
from ossfleet.errors import InvalidRequest, NotFound, RequestTooLarge
from ossfleet.harmony import Message, Tool, ToolCall
from ossfleet.protocol.chat import ChatRequest, validate_messages
from ossfleet.protocol.events import Outcome, fold, stream_position
from ossfleet.protocol.limits import resolve_max_tokens, stop_sequences
from ossfleet.structured import OutputFormat, forced_tools
from ossfleet.v1 import ossfleet_pb2 as pb

SERVICER_FUNCTION = "ossfleet.v1.ossfleet_pb2_grpc.add_OssfleetServicer_to_server"
ADMIN_SERVICER_FUNCTION = "ossfleet.v1.admin_pb2_grpc.add_AdminServicer_to_server"
# Both services, as Serve's gRPC proxy takes them (the gateway deployment implements both).
SERVICER_FUNCTIONS = [SERVICER_FUNCTION, ADMIN_SERVICER_FUNCTION]
ROLES = ("system", "developer", "user", "assistant", "tool")
EFFORTS = ("", "low", "medium", "high")


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
    max_tokens = resolve_max_tokens(req.max_tokens, max_tokens_limit)
    if req.reasoning_effort not in EFFORTS:
        raise InvalidRequest("reasoning_effort must be low, medium or high", param="reasoning_effort")
    temperature = req.temperature if req.HasField("temperature") else 1.0
    top_p = req.top_p if req.HasField("top_p") else 1.0
    if not 0 <= temperature <= 2:
        raise InvalidRequest("temperature must lie in [0, 2]", param="temperature")
    if not 0 < top_p <= 1:
        raise InvalidRequest("top_p must lie in (0, 1]", param="top_p")
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
        stop=stop_sequences(req.stop),
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


class GrpcApi:
    """``ossfleet.v1.Ossfleet``: inference, batch jobs and adapters over the gateway core, for a tenant's key.
    Each RPC passes through :func:`~ossfleet.api.grpc_common.rpc` (authentication, typed statuses)."""

    def __init__(self, core: GatewayCore, batches: BatchService) -> None:
        self.core = core
        self.batches = batches

    async def authenticate(self, authorization: str | None) -> TenantConfig:
        return await self.core.tenant(authorization)

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

    @rpc(pb.GenerateResponse)
    async def generate(self, req: pb.GenerateRequest, call: Call) -> pb.GenerateResponse:
        sub = await self.core.submit(call.who, self._chat(req, call.md))
        rids = list(sub.request_ids or (sub.request_id,))
        outs = await self.core.relay.outcomes_or_cancel(call.who.name, rids, sub.model_name)
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

    @rpc()
    async def generate_stream(self, req: pb.GenerateRequest, call: Call) -> AsyncIterator[pb.GenerateChunk]:
        sub = await self.core.submit(call.who, self._chat(req, call.md))
        # A client that drops a stream does not cancel it: the request runs on and
        # its chunks wait in Redis (stream_ttl_s) for ResumeStream. Cancel cancels.
        rids = list(sub.request_ids or (sub.request_id,))
        async for chunk in self._chunks(rids, sub.model_name, "0-0", call.who.name):
            yield chunk

    @rpc()
    async def resume_stream(self, req: pb.ResumeRequest, call: Call) -> AsyncIterator[pb.GenerateChunk]:
        tenant = call.who.name
        model = await self.core.queue.locate(tenant, req.request_id)
        state = await self.core.queue.request_state(model, req.request_id) if model else {}
        if state.get("tenant") != tenant:  # another tenant's request is reported as missing
            raise NotFound(f"no request {req.request_id!r} for this tenant")
        cursor = stream_position(req.cursor, "cursor") if req.cursor else "0-0"
        async for chunk in self._chunks([req.request_id], state.get("model", ""), cursor):
            yield chunk

    async def _chunks(
        self, rids: list[str], model: str, after: str, tenant: str | None = None
    ) -> AsyncIterator[pb.GenerateChunk]:
        """The chunks of a request's choices (one choice: from entry ``after`` on), each under its own id."""
        outs = [Outcome() for _ in rids]
        labels = (tenant, model) if tenant else None
        events: AsyncIterator[tuple[int, Any]]
        if len(rids) == 1:
            events = ((0, ev) async for ev in self.core.relay.events(model, rids[0], after, labels))
        else:
            events = self.core.relay.merged_events(model, rids, labels)
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

    @rpc(pb.CancelResponse)
    async def cancel(self, req: pb.CancelRequest, call: Call) -> pb.CancelResponse:
        return pb.CancelResponse(status=await self.core.cancel(call.who.name, req.request_id))

    @rpc(pb.ListModelsResponse)
    async def list_models(self, req: pb.ListModelsRequest, call: Call) -> pb.ListModelsResponse:
        names = [m.name for m in self.core.cfg.models] + ["auto"]
        names += [a.id for a in await self.core.adapters.list(call.who.name)]  # the caller's own adapters
        return pb.ListModelsResponse(models=[pb.Model(id=n) for n in names])

    @rpc(pb.GetUsageResponse)
    async def get_usage(self, req: pb.GetUsageRequest, call: Call) -> pb.GetUsageResponse:
        tenant = call.who
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

    @rpc(pb.Batch)
    async def submit_batch(self, req: pb.SubmitBatchRequest, call: Call) -> pb.Batch:
        tenant, file_id = call.who, req.input_file_id
        if bool(req.input) == bool(file_id):
            raise InvalidRequest("give the input inline (input) or an uploaded file (input_file_id), one of them")
        if req.input:
            file_id = (await self.batches.upload(tenant, "grpc-input.jsonl", "batch", req.input)).id
        job = await self.batches.create(
            tenant, file_id, req.endpoint or "/v1/chat/completions", req.completion_window or "24h",
            metadata=dict(req.metadata) or None, mode=req.mode or "queue", skip_invalid_lines=req.skip_invalid_lines,
        )  # fmt: skip
        return batch_pb(job)

    @rpc(pb.Batch)
    async def get_batch(self, req: pb.GetBatchRequest, call: Call) -> pb.Batch:
        return batch_pb(await self.batches.get(call.who, req.batch_id))

    @rpc(pb.ListBatchesResponse)
    async def list_batches(self, req: pb.ListBatchesRequest, call: Call) -> pb.ListBatchesResponse:
        jobs, more = await self.batches.jobs(call.who, req.limit or 20, req.after or None)
        return pb.ListBatchesResponse(batches=[batch_pb(j) for j in jobs], has_more=more)

    @rpc(pb.Batch)
    async def cancel_batch(self, req: pb.GetBatchRequest, call: Call) -> pb.Batch:
        return batch_pb(await self.batches.cancel(call.who, req.batch_id))

    @rpc()
    async def get_batch_results(self, req: pb.GetBatchResultsRequest, call: Call) -> AsyncIterator[pb.FileChunk]:
        job = await self.batches.get(call.who, req.batch_id)
        file_id = job.error_file_id if req.errors else job.output_file_id
        if not file_id:
            what = "error" if req.errors else "output"
            raise NotFound(f"batch {job.id} has no {what} file (status {job.status})", param="batch_id")
        data = await self.batches.content(call.who, file_id)
        for i in range(0, len(data), RESULT_CHUNK):
            yield pb.FileChunk(data=data[i : i + RESULT_CHUNK])

    # -- LoRA adapters -----------------------------------------------------------------------

    @rpc(pb.Adapter)
    async def upload_adapter(self, req: pb.UploadAdapterRequest, call: Call) -> pb.Adapter:
        rec = await self.core.upload_adapter(call.who, req.model, req.name, req.adapter_config, req.adapter_model)
        return _adapter_pb(rec)

    @rpc(pb.ListAdaptersResponse)
    async def list_adapters(self, req: pb.ListAdaptersRequest, call: Call) -> pb.ListAdaptersResponse:
        adapters = await self.core.adapters.list(call.who.name)
        return pb.ListAdaptersResponse(adapters=[_adapter_pb(a) for a in adapters])

    @rpc(pb.Adapter)
    async def delete_adapter(self, req: pb.AdapterRequest, call: Call) -> pb.Adapter:
        rec = await self.core.adapter(call.who, req.id)
        await self.core.adapters.delete(call.who.name, rec.model, rec.name)
        out = _adapter_pb(rec)
        out.deleted = True
        return out


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


def _adapter_pb(a: AdapterRecord) -> pb.Adapter:
    return pb.Adapter(
        id=a.id, model=a.model, name=a.name, rank=a.rank, lora_alpha=a.alpha, target_modules=list(a.modules),
        bytes=a.nbytes, sha256=a.digest, created_at=a.created_at,
    )  # fmt: skip
