"""The CLIs against a platform behind TLS (the chart's Ingress), and what they say when the
connection fails: the address (unreachable), TLS, or the API key. Real gRPC servers on loopback
ports (plaintext, TLS, TLS asking for a client certificate) with certificates that `openssl`
makes for this module (a CA, another CA, a server certificate for `localhost` only, a client
certificate), driven through each CLI's own entry (`run`, which prints the one `error:` line), and
once as the installed `blockrag-admin` process (nothing else on its stderr)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from blockrag.cli.admin import app as admin_app
from blockrag.cli.app import app as blockrag_app
from blockrag.cli.app import run
from blockrag.v1 import admin_pb2, admin_pb2_grpc, generation_pb2, generation_pb2_grpc

KEY = "brk_0123456789abcdef_" + "k" * 43
READER_KEY = "brk_fedcba9876543210_" + "r" * 43
STORE_DOWN = "cannot reach S3 (endpoint 127.0.0.1:9): Connection refused"
ENV = ("BLOCKRAG_ADDRESS", "BLOCKRAG_API_KEY", "BLOCKRAG_TLS", "BLOCKRAG_TLS_CA", "BLOCKRAG_TLS_CERT",
       "BLOCKRAG_TLS_KEY", "BLOCKRAG_TLS_SERVER_NAME")
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")




class Platform(admin_pb2_grpc.AdminServiceServicer, generation_pb2_grpc.GenerationServiceServicer):
    """Checks the key as the platform does: none or an unknown one UNAUTHENTICATED, a reader's
    admin call PERMISSION_DENIED."""

    def _key(self, context) -> str:
        sent = dict(context.invocation_metadata()).get("authorization", "")
        if not sent:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "this platform requires an API key")
        if sent not in (f"Bearer {KEY}", f"Bearer {READER_KEY}"):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key")
        return sent.removeprefix("Bearer ")

    def ListApiKeys(self, request, context):
        self._key(context)
        return admin_pb2.ListApiKeysResponse()

    def CreateApiKey(self, request, context):
        if self._key(context) != KEY:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "CreateApiKey needs the admin role")
        return admin_pb2.CreateApiKeyResponse(key=admin_pb2.ApiKey(key_id="key_1", tenant=request.tenant), api_key="k")

    def ListDistillations(self, request, context):
        self._key(context)
        context.abort(grpc.StatusCode.UNAVAILABLE, STORE_DOWN)  # the platform's own UNAVAILABLE

    def Generate(self, request, context):
        self._key(context)
        yield generation_pb2.GenerateResponse(text="Ada", done=True, usage=generation_pb2.Usage())

    def Ingest(self, request, context):
        self._key(context)
        return generation_pb2.IngestResponse(documents=[
            generation_pb2.IngestedDocument(document_id=d.id, block_ids=["blk_1"], block_tokens=[9])
            for d in request.documents])


@pytest.fixture(scope="module")
def servers(pki):
    """{"plain" | "tls" | "mtls": 127.0.0.1:port}; mtls requires a client certificate by ca.pem."""
    identity = [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())]
    ca = (pki / "ca.pem").read_bytes()
    addresses, running = {}, []
    for name in ("plain", "tls", "mtls"):
        server = grpc.server(futures.ThreadPoolExecutor(2))
        admin_pb2_grpc.add_AdminServiceServicer_to_server(Platform(), server)
        generation_pb2_grpc.add_GenerationServiceServicer_to_server(Platform(), server)
        if name == "plain":
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            credentials = grpc.ssl_server_credentials(identity, root_certificates=ca,
                                                      require_client_auth=name == "mtls")
            port = server.add_secure_port("127.0.0.1:0", credentials)
        server.start()
        addresses[name] = f"127.0.0.1:{port}"
        running.append(server)
    yield addresses
    for server in running:
        server.stop(None)


@pytest.fixture
def cli(monkeypatch, capsys, pki):
    """cli(app, *args, **env) -> (exit status, stdout, stderr as one line), run in pki's directory."""
    for name in ENV:
        # `blockrag-admin --api-key` sets the variable in this process: registered, so monkeypatch undoes it
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.chdir(pki)

    def invoke(app, *args: str, **env: str) -> tuple[int, str, str]:
        for name in ENV:  # each run sees only its own variables (and not the key a previous --api-key set)
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "argv", ["blockrag", *args])
        with pytest.raises(SystemExit) as exited:
            run(app)
        out = capsys.readouterr()
        return exited.value.code, out.out, " ".join(out.err.split())

    return invoke


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MTLS = ("--tls-ca", "ca.pem", "--tls-cert", "client.pem", "--tls-key", "client.key")
UNAUTHENTICATED = "error: UNAUTHENTICATED: {} (the API key was missing or refused: pass --api-key or set $BLOCKRAG_API_KEY)"


def test_tls_with_the_ca_and_a_client_certificate_works_from_flags_or_the_environment(cli, servers) -> None:
    code, out, err = cli(admin_app, "--api-key", KEY, *MTLS, "--tls-server-name", "localhost", "keys", "list",
                         "--address", servers["mtls"])
    assert (code, err) == (0, "") and "No API keys yet." in out
    env = {"BLOCKRAG_TLS_CA": "ca.pem", "BLOCKRAG_TLS_CERT": "client.pem", "BLOCKRAG_TLS_KEY": "client.key",
           "BLOCKRAG_API_KEY": KEY}
    port = servers["mtls"].rsplit(":", 1)[1]
    code, out, err = cli(admin_app, "keys", "list", "--address", f"localhost:{port}", **env)
    assert (code, err) == (0, "") and "No API keys yet." in out
    # `blockrag ask` and `blockrag ingest` take the same options; --tls alone with the CA from the environment
    code, out, _ = cli(blockrag_app, "ask", "Who?", "--tls", "--tls-server-name", "localhost", "--address",
                       servers["tls"], BLOCKRAG_TLS_CA="ca.pem", BLOCKRAG_API_KEY=KEY)
    assert code == 0 and "Ada" in out
    code, out, _ = cli(blockrag_app, "ingest", "--address", servers["mtls"], BLOCKRAG_TLS_SERVER_NAME="localhost", **env)
    assert code == 0 and out.strip().startswith("Ingested 3 documents")


def test_a_certificate_the_ca_did_not_sign_or_for_another_name_is_a_tls_error(cli, servers) -> None:
    address = servers["tls"]
    code, _, err = cli(admin_app, "--api-key", KEY, "--tls-ca", "other-ca.pem", "--tls-server-name", "localhost",
                       "keys", "list", "--address", address)
    assert code == 1 and err.startswith(
        f"error: TLS: the certificate of {address} is not trusted (CERTIFICATE_VERIFY_FAILED: unable to get local "
        f"issuer certificate): check --tls-ca or $BLOCKRAG_TLS_CA (trusted now: the CA of other-ca.pem)"), err
    # --tls alone: the system roots, which never signed this test CA
    _, _, err = cli(admin_app, "--tls", "keys", "list", "--address", address)
    assert err.startswith(f"error: TLS: the certificate of {address} is not trusted (CERTIFICATE_VERIFY_FAILED"), err
    assert err.endswith("(trusted now: the system roots (no --tls-ca))"), err
    # the certificate names localhost, the address is 127.0.0.1
    _, _, err = cli(admin_app, "--tls-ca", "ca.pem", "keys", "list", "--address", address)
    assert err == (f"error: TLS: the certificate of {address} is not issued for 127.0.0.1 (Hostname Verification "
                   f"Check failed): connect by a name it carries (--address), or set --tls-server-name or "
                   f"$BLOCKRAG_TLS_SERVER_NAME"), err


def test_tls_against_plaintext_and_plaintext_against_tls_are_tls_errors(cli, servers) -> None:
    plain, tls = servers["plain"], servers["tls"]
    code, _, err = cli(blockrag_app, "ask", "Who?", "--api-key", KEY, "--tls-ca", "ca.pem", "--address", plain)
    assert code == 1 and err.endswith(
        f"error: TLS: {plain} does not speak TLS (WRONG_VERSION_NUMBER: Invalid certificate verification context): "
        f"for a plaintext platform (`blockrag up`, a port-forward) drop --tls and $BLOCKRAG_TLS*, or check --address"), err
    code, _, err = cli(admin_app, "--api-key", KEY, "keys", "list", "--address", tls)
    assert code == 1 and err == (
        f"error: TLS: {tls} closed the plaintext connection (Socket closed): if it expects TLS (an Ingress does), "
        f"pass --tls (and --tls-ca for a private CA) or set $BLOCKRAG_TLS=1"), err
    # --no-tls wins over TLS settings in the environment
    _, _, err = cli(admin_app, "--no-tls", "keys", "list", "--address", tls, BLOCKRAG_TLS_CA="ca.pem")
    assert err.startswith(f"error: TLS: {tls} closed the plaintext connection"), err


def test_a_server_that_requires_a_client_certificate_refuses_the_handshake_without_one(cli, servers) -> None:
    mtls = servers["mtls"]
    expected = (f"error: TLS: {mtls} closed the connection in the TLS handshake (Socket closed): it may require a "
                f"client certificate (--tls-cert and --tls-key, $BLOCKRAG_TLS_CERT and $BLOCKRAG_TLS_KEY) or refuse "
                f"the one given")
    code, _, err = cli(admin_app, "--api-key", KEY, "--tls-ca", "ca.pem", "--tls-server-name", "localhost", "keys",
                       "list", "--address", mtls)
    assert (code, err) == (1, expected), err
    # a certificate the server's CA did not sign: the same
    _, _, err = cli(admin_app, "--api-key", KEY, "--tls-ca", "ca.pem", "--tls-cert", "other-ca.pem", "--tls-key",
                    "other-ca.key", "--tls-server-name", "localhost", "keys", "list", "--address", mtls)
    assert err == expected, err


def test_nothing_listening_or_no_such_host_is_unreachable(cli) -> None:
    address = f"127.0.0.1:{free_port()}"
    for tls in ((), ("--tls-ca", "ca.pem")):
        code, _, err = cli(admin_app, *tls, "keys", "list", "--address", address)
        assert code == 1 and err == (
            f"error: unreachable: nothing answers at {address} (Failed to connect to remote host: Connection "
            f"refused): check --address or $BLOCKRAG_ADDRESS (locally: is `blockrag up` running?)"), err
    _, _, err = cli(blockrag_app, "ask", "Who?", BLOCKRAG_ADDRESS="no-such-host.invalid:50051")
    assert err.startswith("error: unreachable: cannot resolve the host of no-such-host.invalid:50051 ("), err
    assert err.endswith("): check --address or $BLOCKRAG_ADDRESS"), err


def test_a_missing_or_refused_key_is_unauthenticated_and_a_weaker_one_permission_denied(cli, servers) -> None:
    tls = ("--tls-ca", "ca.pem", "--tls-server-name", "localhost")
    code, _, err = cli(admin_app, *tls, "--api-key", "brk_wrong", "keys", "list", "--address", servers["tls"])
    assert (code, err) == (1, UNAUTHENTICATED.format("unknown or revoked API key")), err
    _, _, err = cli(blockrag_app, "ask", "Who?", *tls, "--address", servers["tls"])
    assert err.endswith(UNAUTHENTICATED.format("this platform requires an API key")), err
    _, _, err = cli(admin_app, "--api-key", READER_KEY, "keys", "create", "--tenant", "t", "--role", "reader",
                    "--address", servers["plain"])
    assert err == ("error: PERMISSION_DENIED: CreateApiKey needs the admin role (the API key was accepted but may "
                   "not do this: pass one whose role and tenant allow it, --api-key or $BLOCKRAG_API_KEY)"), err
    # the platform's own UNAVAILABLE (its object store) is its message, not "unreachable"
    _, _, err = cli(admin_app, "--api-key", KEY, "distill", "list", "--address", servers["plain"])
    assert err.startswith(f"error: UNAVAILABLE: {STORE_DOWN} (is the platform running at"), err


def test_tls_settings_are_checked_before_any_call(cli, pki) -> None:
    address = f"127.0.0.1:{free_port()}"
    code, _, err = cli(admin_app, "--tls-cert", "client.pem", "keys", "list", "--address", address)
    assert (code, err) == (1, "error: TLS settings: --tls-cert/$BLOCKRAG_TLS_CERT without --tls-key/$BLOCKRAG_TLS_KEY: "
                              "a client certificate needs its private key; give both (mutual TLS) or neither"), err
    _, _, err = cli(blockrag_app, "ask", "Who?", "--address", address, BLOCKRAG_TLS_KEY="client.key")
    assert err.startswith("error: TLS settings: --tls-key/$BLOCKRAG_TLS_KEY without --tls-cert/$BLOCKRAG_TLS_CERT"), err
    _, _, err = cli(blockrag_app, "ingest", "--tls-ca", "missing.pem", "--address", address)
    assert err == "error: TLS settings: --tls-ca/$BLOCKRAG_TLS_CA missing.pem: no such file", err
    _, _, err = cli(admin_app, "--tls-ca", "client.key", "health", "--address", address)
    assert err == ("error: TLS settings: --tls-ca/$BLOCKRAG_TLS_CA client.key is not a PEM certificate "
                   "(no 'BEGIN CERTIFICATE' in it)"), err


def test_the_installed_command_prints_one_line_and_nothing_of_grpc(servers, pki) -> None:
    # gRPC's core would print its own handshake log line first: the CLI package sets its verbosity
    env = {k: v for k, v in os.environ.items() if k not in ENV and k != "GRPC_VERBOSITY"}
    command = Path(sys.executable).parent / "blockrag-admin"
    result = subprocess.run([str(command), "--tls-ca", "other-ca.pem", "keys", "list", "--address", servers["tls"]],
                            cwd=pki, env=dict(env, COLUMNS="400"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: TLS: the certificate of") and result.stderr.count("\n") == 1, result.stderr
