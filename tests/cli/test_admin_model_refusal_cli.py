"""`blockrag-admin model list` against a real gRPC server on a loopback port that answers a fixed
registry (no platform): a version a replica refused shows as "failed (refused)", with the reason."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from typer.testing import CliRunner

from blockrag.cli.admin import app
from blockrag.v1 import admin_pb2, admin_pb2_grpc

REASON = ("model version mv_00000000000000b2 is not served: kv_compression fp8_head: answers drift from "
          "uncompressed KV by a mean answer-token KL of 0.0001 nats over 2 questions, above the gate's 3e-05")


class Registry(admin_pb2_grpc.AdminServiceServicer):
    def ListModelVersions(self, request, context):
        return admin_pb2.ListModelVersionsResponse(registered=[
            admin_pb2.RegisteredVersion(version_id="mv_00000000000000b2", tenant="acme", status="failed",
                                        refusal=REASON, created_at=2.0),
            admin_pb2.RegisteredVersion(version_id="mv_00000000000000a1", tenant="acme", status="active",
                                        created_at=1.0)])


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv("BLOCKRAG_API_KEY", raising=False)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    admin_pb2_grpc.add_AdminServiceServicer_to_server(Registry(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("BLOCKRAG_ADDRESS", f"127.0.0.1:{port}")
    yield
    server.stop(None)


def test_model_list_shows_a_refusal_and_its_reason(server):
    result = CliRunner().invoke(app, ["model", "list"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert output.count("(refused)") == 1  # the status column, which may wrap after "failed"
    assert f"mv_00000000000000b2 refused: {REASON}" in output
    assert "mv_00000000000000a1 refused" not in output
