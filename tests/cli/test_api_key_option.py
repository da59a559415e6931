"""The CLIs send the API key: `blockrag-admin --api-key`, $BLOCKRAG_API_KEY, `blockrag ask
--api-key`, to a real gRPC server on a loopback port that records each call's metadata (no
platform). `keys create` prints the key alone on the last line of stdout."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from typer.testing import CliRunner

from blockrag.cli.admin import app as admin_app
from blockrag.cli.app import app as blockrag_app
from blockrag.v1 import admin_pb2, admin_pb2_grpc, generation_pb2, generation_pb2_grpc

KEY = "brk_0123456789abcdef_" + "s" * 43


class Recorder(admin_pb2_grpc.AdminServiceServicer, generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    def _seen(self, context) -> None:
        self.metadata.append(dict(context.invocation_metadata()))

    def ListApiKeys(self, request, context):
        self._seen(context)
        return admin_pb2.ListApiKeysResponse()

    def CreateApiKey(self, request, context):
        self._seen(context)
        return admin_pb2.CreateApiKeyResponse(
            key=admin_pb2.ApiKey(key_id="key_0123456789abcdef", tenant=request.tenant, role=request.role),
            api_key=KEY)

    def Generate(self, request, context):
        self._seen(context)
        if "authorization" not in dict(context.invocation_metadata()):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "this platform requires an API key")
        yield generation_pb2.GenerateResponse(text="Ada", done=True, usage=generation_pb2.Usage())


@pytest.fixture
def server(monkeypatch):
    # `blockrag-admin --api-key` sets the variable in this process: registered here so that
    # monkeypatch removes it after the test
    monkeypatch.setenv("BLOCKRAG_API_KEY", "")
    monkeypatch.delenv("BLOCKRAG_API_KEY")
    recorder = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    admin_pb2_grpc.add_AdminServiceServicer_to_server(recorder, server)
    generation_pb2_grpc.add_GenerationServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("BLOCKRAG_ADDRESS", f"127.0.0.1:{port}")
    yield recorder
    server.stop(None)


def test_admin_sends_the_key_from_the_option_or_the_environment(server, monkeypatch) -> None:
    runner = CliRunner()
    result = runner.invoke(admin_app, ["keys", "list"])
    assert result.exit_code == 0, result.output
    assert "authorization" not in server.metadata[-1] and server.metadata[-1]["application"] == "admin"
    result = runner.invoke(admin_app, ["--api-key", "brk_from_option", "keys", "create", "--tenant", "acme",
                                       "--role", "writer"])
    assert result.exit_code == 0, result.output
    assert server.metadata[-1]["authorization"] == "Bearer brk_from_option"
    assert result.output.strip().splitlines()[-1] == KEY and "shown once" in result.output
    monkeypatch.setenv("BLOCKRAG_API_KEY", "brk_from_env")
    assert runner.invoke(admin_app, ["keys", "list"]).exit_code == 0
    assert server.metadata[-1]["authorization"] == "Bearer brk_from_env"
    result = runner.invoke(admin_app, ["keys", "create", "--tenant", "acme", "--role", "owner"])
    assert result.exit_code != 0 and "use one of reader, writer, admin" in result.output


def test_ask_sends_the_key_and_says_how_when_it_is_missing(server) -> None:
    runner = CliRunner()
    result = runner.invoke(blockrag_app, ["ask", "Who?", "--api-key", "brk_ask"])
    assert result.exit_code == 0, result.output
    assert server.metadata[-1]["authorization"] == "Bearer brk_ask" and "Ada" in result.output
    result = runner.invoke(blockrag_app, ["ask", "Who?"])
    assert result.exit_code != 0 and "UNAUTHENTICATED" in str(result.exception)
    assert "--api-key or set $BLOCKRAG_API_KEY" in str(result.exception)
