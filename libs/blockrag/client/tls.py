"""TLSConfig: whether and how the client speaks TLS to the platform.

The platform itself serves plaintext gRPC (Ray Serve's proxy has no TLS); in Kubernetes the chart's
Ingress terminates TLS, optionally asking for a client certificate (mutual TLS). So TLS is off by
default (`blockrag up`, a port-forward) and on against an Ingress: with a private CA's certificate,
or with the system roots when none is given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from blockrag.errors import InvalidRequestError

TLS_ENV, CA_ENV, CERT_ENV, KEY_ENV, SERVER_NAME_ENV = (
    "BLOCKRAG_TLS", "BLOCKRAG_TLS_CA", "BLOCKRAG_TLS_CERT", "BLOCKRAG_TLS_KEY", "BLOCKRAG_TLS_SERVER_NAME")
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
# what each file must hold (a cheap check: a key passed as the CA otherwise fails only in the handshake)
PEM_MARKERS = {"ca": "-----BEGIN CERTIFICATE-----", "cert": "-----BEGIN CERTIFICATE-----", "key": "PRIVATE KEY-----"}
SETTING = {"ca": f"--tls-ca/${CA_ENV}", "cert": f"--tls-cert/${CERT_ENV}", "key": f"--tls-key/${KEY_ENV}"}


@dataclass(frozen=True)
class TLSConfig:
    """TLS of the client's channel, validated (and its files read) once, at construction.

    ``enabled`` False: plaintext, whatever else is set. ``ca``: the PEM certificate(s) the server's
    must chain to (None: the system roots). ``cert`` and ``key``: a client certificate and its
    private key, together or not at all. ``server_name``: the name the server's certificate must
    carry (and the request's authority), for an address that is not that name (an IP address)."""

    enabled: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    _pem: dict[str, bytes] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        if (self.cert is None) != (self.key is None):
            given, missing = ("cert", "key") if self.key is None else ("key", "cert")
            raise InvalidRequestError(
                f"TLS settings: {SETTING[given]} without {SETTING[missing]}: a client certificate needs "
                f"its private key; give both (mutual TLS) or neither")
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None:
                self._pem[name] = _read_pem(name, Path(path))

    @classmethod
    def resolve(cls, tls: bool | None = None, ca: str | Path | None = None, cert: str | Path | None = None,
                key: str | Path | None = None, server_name: str | None = None) -> TLSConfig:
        """From the CLI's settings: ``tls`` None (neither --tls nor --no-tls) means on when any
        file or the server name is given; --tls alone is TLS with the system roots."""
        ca, cert, key = (Path(p) if p else None for p in (ca, cert, key))
        server_name = (server_name or "").strip() or None
        enabled = tls if tls is not None else any(v is not None for v in (ca, cert, key, server_name))
        if not enabled:
            return cls()
        return cls(True, ca, cert, key, server_name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TLSConfig:
        """From $BLOCKRAG_TLS, $BLOCKRAG_TLS_CA, _CERT, _KEY and _SERVER_NAME (the CLIs' variables)."""
        flag = environ.get(TLS_ENV, "").strip().lower()
        if flag and flag not in TRUE + FALSE:
            raise InvalidRequestError(f"TLS settings: ${TLS_ENV}={flag!r}: use 1/true/yes/on or 0/false/no/off")
        return cls.resolve(flag in TRUE if flag else None, environ.get(CA_ENV), environ.get(CERT_ENV),
                           environ.get(KEY_ENV), environ.get(SERVER_NAME_ENV))

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials (None for any part not given: the system roots, no client certificate)."""
        return grpc.ssl_channel_credentials(root_certificates=self._pem.get("ca"), private_key=self._pem.get("key"),
                                            certificate_chain=self._pem.get("cert"))

    def channel_options(self) -> list[tuple[str, str]]:
        if not self.server_name:
            return []
        # the override checks the certificate (and sends SNI) for this name; the authority too, since
        # an Ingress routes by it (`host:` of the rule): reached by IP address, it would match no rule
        return [("grpc.ssl_target_name_override", self.server_name), ("grpc.default_authority", self.server_name)]

    def describe_ca(self) -> str:
        return f"the CA of {self.ca}" if self.ca else "the system roots (no --tls-ca)"


def _read_pem(name: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidRequestError(f"TLS settings: {SETTING[name]} {path}: no such file") from None
    except OSError as e:
        raise InvalidRequestError(f"TLS settings: {SETTING[name]} {path}: cannot read it ({e.strerror})") from None
    if PEM_MARKERS[name].encode() not in data:
        what = "a PEM private key" if name == "key" else "a PEM certificate"
        raise InvalidRequestError(f"TLS settings: {SETTING[name]} {path} is not {what} "
                                  f"(no {PEM_MARKERS[name].strip('-')!r} in it)")
    return data
