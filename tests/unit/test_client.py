"""The gRPC client retries what is safe to retry, and nothing else (a real gRPC server in-process)."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from ossfleet.client import OssfleetClient
from ossfleet.v1 import ossfleet_pb2 as pb
from ossfleet.v1 import ossfleet_pb2_grpc as pb_grpc


class Flaky(pb_grpc.OssfleetServicer):
    """Answers UNAVAILABLE to the first call of each method, as a proxy being drained would."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _fail_first(self, name: str, context: grpc.ServicerContext) -> None:
        self.calls.append(name)
        if self.calls.count(name) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")

    def GetBatch(self, request, context):
        self._fail_first("GetBatch", context)
        return pb.Batch(id=request.batch_id, status="completed")

    def SubmitBatch(self, request, context):
        self._fail_first("SubmitBatch", context)
        return pb.Batch(id="b1", status="in_progress")


@pytest.fixture
def flaky():
    servicer = Flaky()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_OssfleetServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_client_retries_a_read_on_unavailable(flaky):
    servicer, target = flaky
    with OssfleetClient(target, "osf-test") as client:
        assert client.get_batch("b7").status == "completed"
    assert servicer.calls == ["GetBatch", "GetBatch"]


def test_client_never_retries_a_submission(flaky):
    servicer, target = flaky
    with OssfleetClient(target, "osf-test") as client, pytest.raises(grpc.RpcError) as e:
        client.submit_batch(b"{}\n")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == ["SubmitBatch"]
