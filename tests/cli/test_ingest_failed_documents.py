"""Documents an Ingest could not write (the object store failed midway; the platform's side is
tests/faults/test_ingest_outage.py), as the Python client and `blockrag ingest` show them, against
a real gRPC server on a loopback port that fails the documents whose text says "lost" (no
platform). A request whose every document is lost fails UNAVAILABLE, as the platform's does."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from typer.testing import CliRunner

from blockrag.cli.app import app as blockrag_app
from blockrag.client import BlockRAGClient
from blockrag.client.client import IngestIncompleteError
from blockrag.v1 import generation_pb2 as pb
from blockrag.v1 import generation_pb2_grpc

REASON = "cannot reach S3 to write 'x' (endpoint 127.0.0.1:9, bucket 'kv'): Connection refused"


class Store(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(self) -> None:
        self.requests: list[list[str]] = []

    def Ingest(self, request, context):
        self.requests.append([d.id for d in request.documents])
        lost = [d for d in request.documents if "lost" in d.text]
        if len(lost) == len(request.documents):
            context.abort(grpc.StatusCode.UNAVAILABLE, f"no document was ingested: {REASON}")
        return pb.IngestResponse(
            documents=[pb.IngestedDocument(document_id=d.id, block_ids=["blk_1"], block_tokens=[12])
                       for d in request.documents if d not in lost],
            failed_documents=[pb.FailedDocument(document_id=d.id, reason=REASON) for d in lost], computed_blocks=1)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv("BLOCKRAG_API_KEY", raising=False)
    store = Store()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    generation_pb2_grpc.add_GenerationServiceServicer_to_server(store, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("BLOCKRAG_ADDRESS", f"127.0.0.1:{port}")
    yield store
    server.stop(None)


def test_the_client_raises_naming_the_failed_documents_unless_asked_for_the_partial_response(server) -> None:
    documents = [("a", "kept"), ("b", "lost"), ("c", "lost too")]
    with BlockRAGClient() as client:
        with pytest.raises(IngestIncompleteError) as incomplete:
            client.ingest("coast", documents)
        reply = client.ingest("coast", documents, partial=True)
    error = incomplete.value
    assert [d.document_id for d in error.failed] == ["b", "c"]
    assert [d.document_id for d in error.response.documents] == ["a"]
    assert str(error).startswith(f"2 of 3 document(s) not ingested ('b': {REASON}; 'c': {REASON}); the other 1 were")
    assert [d.document_id for d in reply.failed_documents] == ["b", "c"]


def write(tmp_path, texts: dict[str, str]) -> list[str]:
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    return [str(tmp_path / name) for name in texts]


def test_cli_lists_the_documents_not_ingested_and_exits_1(server, tmp_path) -> None:
    paths = write(tmp_path, {"a.md": "kept", "b.md": "lost", "c.md": "kept", "d.md": "kept"})
    result = CliRunner().invoke(blockrag_app, ["ingest", *paths, "--batch", "2"])
    assert result.exit_code == 1, result.output
    assert server.requests == [["a.md", "b.md"], ["c.md", "d.md"]]
    assert "Ingested 3 of 4 documents" in result.output and "1 document(s) NOT ingested" in result.output
    listed = [line for line in result.output.splitlines() if ".md" in line]
    assert len(listed) == 1 and "b.md" in listed[0] and "cannot reach S3" in listed[0]


def test_cli_counts_the_documents_alone_when_all_went_in(server, tmp_path) -> None:
    result = CliRunner().invoke(blockrag_app, ["ingest", *write(tmp_path, {"a.md": "kept", "b.md": "kept"})])
    assert result.exit_code == 0, result.output
    assert "Ingested 2 documents into" in result.output and "NOT ingested" not in result.output


def test_cli_lists_a_refused_request_and_the_rest_once_some_were_ingested(server, tmp_path) -> None:
    paths = write(tmp_path, {"a.md": "kept", "b.md": "kept", "c.md": "lost", "d.md": "lost", "e.md": "kept"})
    result = CliRunner().invoke(blockrag_app, ["ingest", *paths, "--batch", "2"])
    assert result.exit_code == 1, result.output
    assert server.requests == [["a.md", "b.md"], ["c.md", "d.md"]]  # none sent after the refusal
    assert "Ingested 2 of 5 documents" in result.output and "3 document(s) NOT ingested" in result.output
    listed = {line.split()[1]: line for line in result.output.splitlines() if ".md" in line}
    assert sorted(listed) == ["c.md", "d.md", "e.md"]
    assert "UNAVAILABLE" in listed["c.md"] and "not sent after the error" in listed["e.md"]
