"""A KV entry whose body comes from S3 shorter than the length the server announced (a proxy or a
connection that cuts it) is a corrupt entry, not an outage (issue 14, item 6): recomputed, counted
once in blockrag_kv_entries_rejected_total{reason="corrupt"} (not in
blockrag_object_store_unavailable_total), logged once naming the block, and replaced, so the next
reader gets the new entry from the store.

The cut is real: an HTTP proxy in front of rclone's S3 server forwards every call and sends the
chosen object's GET body half of it under the full Content-Length, then closes the connection.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import torch

from blockrag.kvcache.index import CacheIndex, block_id_for
from blockrag.kvcache.memory_tier import ByteLRU
from blockrag.kvcache.object_store import TruncatedObjectError
from blockrag.kvcache.s3_store import S3Config, S3ObjectStore
from blockrag.resolve import AccessLog, BlockRef, BlockResolver, BlockWriter, LocalEncoder, StoreTier
from blockrag.telemetry.metrics import KV_ENTRIES_REJECTED, OBJECT_STORE_UNAVAILABLE

TENANT = "acme"
TEXTS = ["The Harbour Office of Tolvik opens at seven.", "Ada Brenn signs every permit for long boats.",
         "Fishing boats unload at the eastern pier."]
CUT = 1  # the middle block's entry comes short; its neighbours whole
HOP_HEADERS = {"connection", "transfer-encoding", "keep-alive", "date", "server"}


class ShortBodies(ThreadingHTTPServer):
    """A proxy to ``upstream`` that cuts the GET bodies of the object keys in ``cut`` to half."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.cut: set[str] = set()  # "bucket/key"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=10)
        try:  # the client's Host header goes on unchanged: it is signed
            upstream.request(self.command, self.path, body, dict(self.headers))
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        short = (self.command == "GET" and response.status == 200
                 and self.path.split("?", 1)[0].lstrip("/") in self.server.cut)
        self.send_response_only(response.status, response.reason)
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_HEADERS]
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if short else data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


@pytest.fixture
def index(tmp_path):
    index = CacheIndex.open(f"sqlite:///{tmp_path}/index.db")
    yield index
    index.close()


@pytest.fixture
def proxy(s3_server):
    proxy = ShortBodies(s3_server.endpoint)
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def replica(index, objects) -> BlockResolver:
    store = StoreTier(index, objects, threads=2, access=AccessLog(index, flush_every_s=3600))
    return BlockResolver(LocalEncoder(BlockWriter(index, objects)), store=store, memory=ByteLRU(1 << 26))


def resolve(index, objects, runtime):
    refs = [BlockRef(block_id_for(TENANT, t)) for t in TEXTS]
    return asyncio.run(replica(index, objects).resolve(runtime, TENANT, refs))


def location(index, runtime, text: str) -> str:
    (row,) = index.lookup(TENANT, [block_id_for(TENANT, text)], runtime.version)
    return row.location


def figures() -> tuple[float, float, float]:
    """(corrupt, foreign, reads unavailable) as counted so far."""
    return (KV_ENTRIES_REJECTED.labels(reason="corrupt")._value.get(),
            KV_ENTRIES_REJECTED.labels(reason="foreign")._value.get(),
            OBJECT_STORE_UNAVAILABLE.labels(operation="read")._value.get())


def test_a_body_cut_short_is_a_corrupt_entry_recomputed_and_replaced_not_an_outage(tiny, index, s3_server, proxy,
                                                                                  caplog):
    bucket = f"short-{secrets.token_hex(4)}"
    direct = S3ObjectStore(S3Config(endpoint=s3_server.endpoint, bucket=bucket, access_key=s3_server.access_key,
                                    secret_key=s3_server.secret_key))
    # the same bucket through the proxy: the index's locations name the bucket, not the endpoint
    via = S3ObjectStore(S3Config(endpoint=proxy.endpoint, bucket=bucket, access_key=s3_server.access_key,
                                 secret_key=s3_server.secret_key))
    written = BlockWriter(index, direct).write(tiny, TENANT, TEXTS)
    assert resolve(index, via, tiny).tiers() == {"store": 3}  # whole through the proxy; the opening stored
    target = location(index, tiny, TEXTS[CUT])
    proxy.cut.add(urlsplit(target).netloc + urlsplit(target).path)
    with pytest.raises(TruncatedObjectError, match=r"came short: \d+ of \d+ bytes"):
        via.get(target)
    corrupt, foreign, unreachable = figures()

    with caplog.at_level(logging.WARNING, logger="blockrag"):
        mended = resolve(index, via, tiny)
    assert [b.tier for b in mended.blocks] == ["store", "computed", "store"] and mended.corrupt == 1
    assert torch.allclose(mended.blocks[CUT].kv.keys, written[CUT].kv.keys, atol=1e-5)
    assert figures() == (corrupt + 1, foreign, unreachable)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1, logged
    assert block_id_for(TENANT, TEXTS[CUT]) in logged[0] and "came short" in logged[0]

    # replaced: a new object, read whole by the next replica, nothing more counted
    assert location(index, tiny, TEXTS[CUT]) != target
    assert resolve(index, via, tiny).tiers() == {"store": 3}
    assert figures() == (corrupt + 1, foreign, unreachable)
