"""A small Python client for ossfleet's gRPC API.

    with OssfleetClient("localhost:9000", api_key) as client:
        reply = client.generate("gpt-oss-20b", [("user", "Hello!")], max_tokens=64)
        for chunk in client.stream("gpt-oss-20b", [("user", "Tell me more")]):
            print(chunk.content, end="")

It adds the metadata every call needs (``authorization`` and the Serve
``application``). ``secure=True`` speaks TLS, as a production endpoint
(behind its load balancer) requires.

Calls that change nothing or are idempotent (reads, cancels, resuming a
stream from its cursor) are retried by gRPC itself on ``UNAVAILABLE`` (a
proxy restarted, a connection reset), through the channel's service config;
``Generate``, ``GenerateStream`` and ``SubmitBatch`` are not, since a retry
could run the work twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from ossfleet.v1 import ossfleet_pb2 as pb
from ossfleet.v1 import ossfleet_pb2_grpc as pb_grpc


def messages(pairs: Sequence[tuple[str, str]] | Sequence[pb.Message]) -> list[pb.Message]:
    return [m if isinstance(m, pb.Message) else pb.Message(role=m[0], content=m[1]) for m in pairs]


IDEMPOTENT = ("Cancel", "ResumeStream", "ListModels", "GetUsage", "GetBatch", "ListBatches", "CancelBatch",
              "GetBatchResults")  # fmt: skip
SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": "ossfleet.v1.Ossfleet", "method": m} for m in IDEMPOTENT],
        "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "2s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
})  # fmt: skip


# How soon a channel whose server went away tries again: gRPC's default backoff grows to 120 s between
# attempts, so a client could wait up to two minutes after the gateways are back (Serve restarts a killed
# gateway replica within seconds). Capped at 2 s here: a resuming client reconnects soon after they return.
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
             ("grpc.max_reconnect_backoff_ms", 2000)]  # fmt: skip


class OssfleetClient:
    def __init__(self, target: str, api_key: str, *, secure: bool = False, application: str = "gateway") -> None:
        creds = grpc.ssl_channel_credentials() if secure else None
        opts = [("grpc.enable_retries", 1), ("grpc.service_config", SERVICE_CONFIG), *RECONNECT]
        self.channel = grpc.secure_channel(target, creds, opts) if creds else grpc.insecure_channel(target, opts)
        self.stub = pb_grpc.OssfleetStub(self.channel)
        self.metadata = (("authorization", f"Bearer {api_key}"), ("application", application))

    def __enter__(self) -> OssfleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _req(self, model: str, msgs: Sequence[Any], **kw: Any) -> pb.GenerateRequest:
        return pb.GenerateRequest(model=model, messages=messages(msgs), **kw)

    def generate(self, model: str, msgs: Sequence[Any], *, timeout: float | None = None, **kw: Any) -> Any:
        return self.stub.Generate(self._req(model, msgs, **kw), metadata=self.metadata, timeout=timeout)

    def stream(self, model: str, msgs: Sequence[Any], *, timeout: float | None = None, **kw: Any) -> Iterator[Any]:
        return self.stub.GenerateStream(self._req(model, msgs, **kw), metadata=self.metadata, timeout=timeout)

    def resume(self, request_id: str, cursor: str = "", *, timeout: float | None = None) -> Iterator[Any]:
        req = pb.ResumeRequest(request_id=request_id, cursor=cursor)
        return self.stub.ResumeStream(req, metadata=self.metadata, timeout=timeout)

    def cancel(self, request_id: str) -> str:
        return str(self.stub.Cancel(pb.CancelRequest(request_id=request_id), metadata=self.metadata).status)

    def list_models(self) -> list[str]:
        return [m.id for m in self.stub.ListModels(pb.ListModelsRequest(), metadata=self.metadata).models]

    def usage(self) -> Any:
        return self.stub.GetUsage(pb.GetUsageRequest(), metadata=self.metadata)

    # -- LoRA adapters -----------------------------------------------------------------------

    def upload_adapter(self, model: str, name: str, folder: str | Path) -> Any:
        """Upload a PEFT adapter folder (adapter_config.json, adapter_model.safetensors) as ``<model>:<name>``."""
        d = Path(folder)
        req = pb.UploadAdapterRequest(
            model=model, name=name, adapter_config=(d / "adapter_config.json").read_bytes(),
            adapter_model=(d / "adapter_model.safetensors").read_bytes(),
        )  # fmt: skip
        return self.stub.UploadAdapter(req, metadata=self.metadata)

    def list_adapters(self) -> list[Any]:
        return list(self.stub.ListAdapters(pb.ListAdaptersRequest(), metadata=self.metadata).adapters)

    def delete_adapter(self, adapter_id: str) -> Any:
        return self.stub.DeleteAdapter(pb.AdapterRequest(id=adapter_id), metadata=self.metadata)

    # -- batch jobs --------------------------------------------------------------------------

    def submit_batch(self, data: bytes, **kw: Any) -> Any:
        """Submit a JSONL batch inline; ``kw``: endpoint, completion_window, mode, skip_invalid_lines, metadata."""
        return self.stub.SubmitBatch(pb.SubmitBatchRequest(input=data, **kw), metadata=self.metadata)

    def get_batch(self, batch_id: str) -> Any:
        return self.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), metadata=self.metadata)

    def list_batches(self, limit: int = 20, after: str = "") -> Any:
        return self.stub.ListBatches(pb.ListBatchesRequest(limit=limit, after=after), metadata=self.metadata)

    def cancel_batch(self, batch_id: str) -> Any:
        return self.stub.CancelBatch(pb.GetBatchRequest(batch_id=batch_id), metadata=self.metadata)

    def batch_results(self, batch_id: str, errors: bool = False) -> bytes:
        """The batch's output (or error) file, whole."""
        req = pb.GetBatchResultsRequest(batch_id=batch_id, errors=errors)
        return b"".join(c.data for c in self.stub.GetBatchResults(req, metadata=self.metadata))
