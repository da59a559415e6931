"""TLS on the platform's gRPC port: a certificate and key from files, optionally a CA whose
client certificates the port then requires.

Ray Serve 2.60's gRPC proxy listens in plaintext only (gRPCOptions takes a port and servicer
functions). Its server object does reach the servicer functions, in the proxy's own process,
before it starts, so `add_tls_to_server` (one of them) adds a TLS listener to that same server:
the calls it takes are the calls the plaintext port takes, routed and answered alike. Its
settings come from the environment, which the platform sets before Ray starts (the proxy's
process inherits it), as PROMETHEUS_MULTIPROC_DIR.

Ray still binds its own plaintext port on every interface; with TLS on, `blockrag up` gives it
an internal port of its own and the public port is the TLS one. Keep the internal one closed to
the outside (a firewall, a pod network).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from blockrag.errors import InvalidRequestError, PlatformStartError

CERT_ENV, KEY_ENV, CLIENT_CA_ENV, ADDRESS_ENV = (
    "BLOCKRAG_SERVER_TLS_CERT", "BLOCKRAG_SERVER_TLS_KEY", "BLOCKRAG_SERVER_TLS_CLIENT_CA", "BLOCKRAG_SERVER_TLS_ADDRESS")


@dataclass(frozen=True)
class ServerTLS:
    """cert_file: the server's certificate chain (PEM); key_file: its private key (PEM);
    client_ca_file: when set, clients must present a certificate signed by it."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def check(self) -> None:
        """InvalidRequestError naming the file and the flag, before anything starts: a file
        missing or unreadable, not PEM, or a key that is not the certificate's."""
        for path, flag in ((self.cert_file, "--tls-cert"), (self.key_file, "--tls-key"),
                           (self.client_ca_file, "--tls-client-ca")):
            if path is None:
                continue
            try:
                text = Path(path).read_bytes()
            except OSError as e:
                raise InvalidRequestError(f"{flag} {path}: cannot read it ({e.strerror or e})") from None
            if b"-----BEGIN " not in text:
                raise InvalidRequestError(f"{flag} {path}: not a PEM file (no '-----BEGIN' line)")
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, ValueError) as e:
            raise InvalidRequestError(f"--tls-cert {self.cert_file} and --tls-key {self.key_file} do not make a "
                                      f"certificate and its key ({e})") from None
        if self.client_ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(self.client_ca_file))
            except ssl.SSLError as e:
                raise InvalidRequestError(f"--tls-client-ca {self.client_ca_file}: not a CA certificate ({e})") from None

    def env(self, address: str) -> dict[str, str]:
        """The variables that make the proxy listen with TLS on ``address`` (host:port)."""
        env = {CERT_ENV: str(Path(self.cert_file).resolve()), KEY_ENV: str(Path(self.key_file).resolve()),
               ADDRESS_ENV: address}
        if self.client_ca_file is not None:
            env[CLIENT_CA_ENV] = str(Path(self.client_ca_file).resolve())
        return env

    @classmethod
    def from_env(cls) -> tuple[ServerTLS, str] | None:
        """The settings and address `env` set, or None when TLS is off."""
        if not os.environ.get(ADDRESS_ENV):
            return None
        ca = os.environ.get(CLIENT_CA_ENV)
        return cls(Path(os.environ[CERT_ENV]), Path(os.environ[KEY_ENV]), Path(ca) if ca else None), os.environ[ADDRESS_ENV]

    def credentials(self):
        import grpc

        ca = Path(self.client_ca_file).read_bytes() if self.client_ca_file is not None else None
        return grpc.ssl_server_credentials([(Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())],
                                           root_certificates=ca, require_client_auth=ca is not None)


def add_tls_to_server(_servicer, server) -> None:
    """A servicer function (gRPCOptions.grpc_servicer_functions): when the environment asks for
    TLS, a TLS listener on the server, once per server. PlatformStartError when it cannot bind."""
    found = ServerTLS.from_env()
    if found is None or getattr(server, "_blockrag_tls", False):
        return
    tls, address = found
    try:
        bound = server.add_secure_port(address, tls.credentials())
    except RuntimeError:  # grpcio raises where older versions returned 0
        bound = 0
    if not bound:
        raise PlatformStartError(f"the gRPC proxy could not listen with TLS on {address}: is the port free?")
    server._blockrag_tls = True
