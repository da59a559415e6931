"""`blockrag up --tls-cert --tls-key`: the gRPC port speaks TLS (server_tls.py adds the listener
in Ray's proxy), answers over it as over plaintext, refuses plaintext, and the platform stops
cleanly. A platform of its own (about a minute to start); certificates from fixtures/pki.py."""

from __future__ import annotations

import json
import shutil

import grpc
import pytest
from calls import ADMIN
from fixtures.platform import start_platform, stop_platform
from grpc_health.v1 import health_pb2, health_pb2_grpc

from blockrag.v1 import admin_pb2, admin_pb2_grpc

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def tls_platform(pki, tmp_path_factory):
    running = start_platform(tmp_path_factory.mktemp("tls-platform"), "--tls-cert", str(pki / "server.pem"),
                             "--tls-key", str(pki / "server.key"))
    yield running
    code = stop_platform(running)
    assert code == 0, f"`blockrag up` did not stop cleanly (exit {code}):\n{running.log_tail()}"


def test_the_grpc_port_speaks_tls(tls_platform, pki):
    assert json.loads((tls_platform.state_dir / "ready.json").read_text())["tls"] is True
    credentials = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
    # the certificate names localhost; the ready file gives 127.0.0.1
    with grpc.secure_channel(tls_platform.grpc, credentials,
                             options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        # routed to an application as on the plaintext port: the admin service answers
        versions = admin_pb2_grpc.AdminServiceStub(channel).ListModelVersions(
            admin_pb2.ListModelVersionsRequest(), metadata=ADMIN, timeout=60)
        assert [v.serving for v in versions.versions].count(True) == 1
    with grpc.insecure_channel(tls_platform.grpc) as channel, pytest.raises(grpc.RpcError) as plaintext:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "(TLS)" in tls_platform.log.read_text()
