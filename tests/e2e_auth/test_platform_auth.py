"""The platform with authentication on, as an operator runs it (the package's platform,
tests/e2e_auth/conftest.py: the first admin key from `blockrag keys bootstrap`, then
`blockrag up --auth`); keys made with `blockrag-admin keys create`, used by `blockrag ingest/ask`
(--api-key, $BLOCKRAG_API_KEY) and by raw gRPC stubs through Ray Serve's proxy; a revoked key
refused. Its tenants ("initech", "umbrella") are its own: the isolation suite on the same
platform uses others.
"""

from __future__ import annotations

import grpc
import pytest
from e2e_auth.auth_cli import ADMIN_TENANT, cli
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blockrag.v1 import cache_index_pb2, cache_index_pb2_grpc, generation_pb2, generation_pb2_grpc


def metadata(app: str, key: str | None) -> tuple:
    return (("application", app),) + ((("authorization", f"Bearer {key}"),) if key else ())


def test_keys_roles_and_tenants_on_a_platform_with_auth(auth_platform, tmp_path):
    state, boot = auth_platform.state_dir, auth_platform.bootstrap
    admin = auth_platform.keys["admin"]
    assert boot.stdout.strip() == admin  # the key alone on stdout; what it is on stderr
    assert admin.startswith("brk_") and admin not in (state / "index.db").read_bytes().decode(errors="replace")
    assert f"tenant {ADMIN_TENANT!r}" in boot.stderr
    again = cli("blockrag", "keys", "bootstrap", "--state-dir", str(state))
    assert again.returncode == 1 and "an admin key exists already" in again.stderr

    assert "Authentication is on" in auth_platform.log.read_text(errors="replace")
    address = auth_platform.grpc
    made = {}
    for tenant, role in [("initech", "writer"), ("initech", "reader"), ("umbrella", "reader")]:
        created = cli("blockrag-admin", "--api-key", admin, "keys", "create", "--tenant", tenant, "--role", role,
                      address=address)
        assert created.returncode == 0, created.stderr
        made[tenant, role] = created.stdout.strip().splitlines()[-1]
    writer, reader, other = made["initech", "writer"], made["initech", "reader"], made["umbrella", "reader"]

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "harbour.md").write_text("# Harbour\n\nThe harbour master of Tolvik is Ada Brenn.\n")
    denied = cli("blockrag", "ingest", str(tmp_path / "docs"), "--collection", "manual", address=address, key=reader)
    assert denied.returncode == 1 and "PERMISSION_DENIED: Ingest needs the writer role" in denied.stderr
    ingested = cli("blockrag", "ingest", str(tmp_path / "docs"), "--collection", "manual", "--api-key", writer,
                   address=address)
    assert ingested.returncode == 0 and "1 blocks" in ingested.stdout, ingested.stderr
    asked = cli("blockrag", "ask", "Who is the harbour master of Tolvik?", "--collection", "manual",
                address=address, key=reader)
    assert asked.returncode == 0 and "1 from store" in asked.stdout, asked.stderr
    nokey = cli("blockrag", "ask", "Who?", "--collection", "manual", address=address)
    assert nokey.returncode == 1 and "UNAUTHENTICATED" in nokey.stderr and "--api-key" in nokey.stderr
    assert "Traceback" not in nokey.stderr

    with grpc.insecure_channel(address) as channel:
        generation = generation_pb2_grpc.GenerationServiceStub(channel)

        def ask(key: str | None, **request):
            return list(generation.Generate(generation_pb2.GenerateRequest(
                question="Who is the harbour master?", max_new_tokens=2, **request),
                metadata=metadata("generation", key)))

        def code_of(call) -> grpc.StatusCode:
            with pytest.raises(grpc.RpcError) as failed:
                call()
            assert "Traceback" not in failed.value.details()
            return failed.value.code()

        # the tenant is the key's: umbrella's reader does not see initech's collection, nor may name initech
        assert code_of(lambda: ask(other, collection="manual")) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: ask(other, collection="manual", tenant="initech")) == grpc.StatusCode.PERMISSION_DENIED
        block_ids = list(ask(reader, collection="manual")[-1].usage.block_ids)
        assert len(block_ids) == 1
        # internal services: admin only
        index = cache_index_pb2_grpc.CacheIndexServiceStub(channel)
        request = cache_index_pb2.GetBlocksRequest(tenant="initech", block_ids=block_ids)
        for key in (None, writer):
            assert code_of(lambda: index.GetBlocks(request, metadata=metadata("cache_index", key))) == \
                grpc.StatusCode.PERMISSION_DENIED
        assert "Ada Brenn" in index.GetBlocks(request, metadata=metadata("cache_index", admin)).blocks[0].text
        # health stays open to probes (answered by the proxy)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING

    listed = cli("blockrag-admin", "keys", "list", "--tenant", "initech", address=address, key=admin)
    assert listed.returncode == 0 and listed.stdout.count("key_") == 2 and "brk_" not in listed.stdout
    reader_id = next(line.split()[1] for line in listed.stdout.splitlines() if "reader" in line)
    revoked = cli("blockrag-admin", "keys", "revoke", reader_id, address=address, key=admin)
    assert revoked.returncode == 0 and f"Revoked {reader_id}" in revoked.stdout, revoked.stderr
    refused = cli("blockrag", "ask", "Who?", "--collection", "manual", address=address, key=reader)
    assert refused.returncode == 1 and "UNAUTHENTICATED: the API key is unknown or revoked" in refused.stderr
    not_admin = cli("blockrag-admin", "health", address=address, key=writer)
    assert not_admin.returncode == 1 and "PERMISSION_DENIED" in not_admin.stderr
