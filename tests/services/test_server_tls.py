"""TLS on the platform's gRPC port (server_tls.py): the settings checked before anything starts,
and the listener the servicer function adds to a real gRPC server, which takes TLS calls (with a
client certificate when a client CA is set) and refuses plaintext. Certificates: fixtures/pki.py."""

from __future__ import annotations

import shutil
from concurrent import futures

import grpc
import pytest
from fixtures.ports import free_port
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from blockrag.errors import InvalidRequestError
from blockrag_services.server_tls import ADDRESS_ENV, ServerTLS, add_tls_to_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def test_bad_settings_are_refused_naming_the_file(pki, tmp_path):
    ok = ServerTLS(pki / "server.pem", pki / "server.key", pki / "ca.pem")
    ok.check()
    (tmp_path / "notes.txt").write_text("not a certificate")
    cases = [
        (ServerTLS(tmp_path / "missing.pem", pki / "server.key"), f"--tls-cert {tmp_path / 'missing.pem'}: cannot read it"),
        (ServerTLS(tmp_path / "notes.txt", pki / "server.key"),
         f"--tls-cert {tmp_path / 'notes.txt'}: not a PEM file (no '-----BEGIN' line)"),
        (ServerTLS(pki / "server.pem", pki / "client.key"),
         f"--tls-cert {pki / 'server.pem'} and --tls-key {pki / 'client.key'} do not make a certificate and its key"),
        (ServerTLS(pki / "server.pem", pki / "server.key", pki / "server.key"),
         f"--tls-client-ca {pki / 'server.key'}: not a CA certificate"),
    ]
    for tls, message in cases:
        with pytest.raises(InvalidRequestError) as refused:
            tls.check()
        assert str(refused.value).startswith(message), str(refused.value)


def _server(tls: ServerTLS | None, monkeypatch) -> tuple[grpc.Server, int, int]:
    """A gRPC server with the health service on a plaintext port, plus TLS where ``tls`` says."""
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    plain = server.add_insecure_port("127.0.0.1:0")
    port = free_port()
    if tls is not None:
        for name, value in tls.env(f"127.0.0.1:{port}").items():
            monkeypatch.setenv(name, value)
    add_tls_to_server(None, server)
    add_tls_to_server(None, server)  # every servicer function runs once per server: one listener
    server.start()
    return server, plain, port


def _check(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def _tls_channel(port: int, pki, ca: str = "ca.pem", client: bool = False) -> grpc.Channel:
    identity = ((pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes()) if client else (None, None)
    credentials = grpc.ssl_channel_credentials((pki / ca).read_bytes(), *identity)
    # the server's certificate names localhost, not 127.0.0.1
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", "localhost")])


def test_the_tls_listener_takes_tls_calls_and_refuses_plaintext(pki, monkeypatch):
    server, plain, port = _server(ServerTLS(pki / "server.pem", pki / "server.key"), monkeypatch)
    try:
        with _tls_channel(port, pki) as channel:
            assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as refused:
            _check(channel)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(port, pki, ca="other-ca.pem") as channel, pytest.raises(grpc.RpcError) as untrusted:
            _check(channel)
        assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(f"127.0.0.1:{plain}") as channel:  # Ray's port stays as it was
            assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(None)


def test_a_client_ca_requires_a_client_certificate(pki, monkeypatch):
    server, _, port = _server(ServerTLS(pki / "server.pem", pki / "server.key", pki / "ca.pem"), monkeypatch)
    try:
        with _tls_channel(port, pki) as channel, pytest.raises(grpc.RpcError) as refused:
            _check(channel)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(port, pki, client=True) as channel:
            assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(None)


def test_without_the_environment_no_listener_is_added(monkeypatch):
    monkeypatch.delenv(ADDRESS_ENV, raising=False)

    class NoSecurePort:
        def add_secure_port(self, *args):
            raise AssertionError("TLS is off: no listener")

    add_tls_to_server(None, NoSecurePort())
    assert ServerTLS.from_env() is None
