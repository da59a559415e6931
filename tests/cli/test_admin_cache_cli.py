"""`blockrag-admin cache sweep | evict` against a real gRPC server on a loopback port that records
the requests and answers fixed figures (no platform): flags become the request, the reply a line."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
import typer
from typer.testing import CliRunner

from blockrag.cli.admin import app
from blockrag.cli.admin_cache import parse_bytes
from blockrag.v1 import admin_pb2, admin_pb2_grpc


class Recorder(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self) -> None:
        self.requests: list[object] = []

    def CacheStats(self, request, context):
        self.requests.append(request)
        tiers = [admin_pb2.MemoryTierStats(tier="device", entries=2, bytes=2 << 20, capacity_bytes=8 << 20, hits=7,
                                           misses=3),
                 admin_pb2.MemoryTierStats(tier="pinned", entries=1, bytes=1 << 20, capacity_bytes=4 << 20, hits=2,
                                           misses=1)]
        replica = admin_pb2.ReplicaCacheStats(replica="g#1", entries=3, bytes=3 << 20, capacity_bytes=12 << 20, hits=9,
                                              misses=1, tiers=tiers)
        return admin_pb2.CacheStatsResponse(tenants=[admin_pb2.TenantBytes(tenant="acme", entries=3, bytes=3 << 20)],
                                            replicas=[replica])

    def SweepCache(self, request, context):
        self.requests.append(request)
        return admin_pb2.SweepCacheResponse(scanned=12, deleted=3, deleted_bytes=3 << 20, young=2, expired_writes=1)

    def EvictCache(self, request, context):
        self.requests.append(request)
        return admin_pb2.EvictCacheResponse(entries=5, bytes=5 << 10, by_reason={"tenant": 4, "ttl": 1},
                                            tenants=[admin_pb2.TenantBytes(tenant="acme", entries=5, bytes=5 << 10)])


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv("BLOCKRAG_API_KEY", raising=False)
    recorder = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    admin_pb2_grpc.add_AdminServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("BLOCKRAG_ADDRESS", f"127.0.0.1:{port}")
    yield recorder
    server.stop(None)


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_stats_show_each_tenant(server):
    out = invoke("cache", "stats", "--tenant", "acme")
    assert server.requests == [admin_pb2.CacheStatsRequest(tenant="acme")]
    assert "acme │ 3 │ 3.0 MiB" in out
    # a row per tier, fastest first, then the replica's total
    assert "g#1 │ device │ 2 │ 2.0 MiB │ 8.0 MiB │ 7 │ 3" in out and "g#1 │ pinned │ 1 │ 1.0 MiB │ 4.0 MiB │ 2 │ 1" in out
    assert out.index("device") < out.index("pinned") < out.index("g#1 │ all │ 3 │ 3.0 MiB │ 12.0 MiB │ 9 │ 1")


def test_sweep(server):
    out = invoke("cache", "sweep", "--grace", "60", "--dry-run")
    assert server.requests == [admin_pb2.SweepCacheRequest(grace_s=60, dry_run=True)]
    assert "Swept 12 entry objects: would delete 3 orphans (3.0 MiB); 2 younger" in out


def test_evict(server):
    out = invoke("cache", "evict", "--tenant-high", "2GiB", "--tenant-low", "1.5G", "--store-high", "10GiB",
                 "--ttl", "86400", "--tenant", "")
    expected = admin_pb2.EvictCacheRequest(
        tenant_bounds=admin_pb2.Watermarks(high_bytes=2 << 30, low_bytes=3 << 29),
        store_bounds=admin_pb2.Watermarks(high_bytes=10 << 30, low_bytes=10 << 30), ttl_s=86400, tenant="")
    assert server.requests == [expected] and server.requests[0].HasField("tenant")
    assert "Evicted 5 entries (5.0 KiB): tenant 4, ttl 1" in out and "acme" in out


def test_evict_needs_a_bound(server):
    result = CliRunner().invoke(app, ["cache", "evict"])
    assert result.exit_code != 0 and "give a bound" in result.output and server.requests == []


def test_sizes():
    assert [parse_bytes(t, "--x") for t in ("1000", "512MiB", "2g", "1.5 KiB", "", "0")] == \
        [1000, 512 << 20, 2 << 30, 1536, 0, 0]
    for bad in ("12 parsecs", "-1", "MiB5"):
        with pytest.raises(typer.BadParameter):
            parse_bytes(bad, "--x")
