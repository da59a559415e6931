"""What a failed call says to a person: which of the address, TLS or the API key to check.

gRPC reports an address where nothing listens and a failed TLS handshake alike, as UNAVAILABLE
"failed to connect to all addresses"; only its details tell them apart. The strings matched here are
grpcio 1.85's (tests/cli/test_cli_tls.py produces each one against real servers). An UNAVAILABLE
the platform itself answers (the object store is down) has other details and keeps them.
"""

from __future__ import annotations

import re

import grpc

from blockrag.client.tls import TLSConfig

Code = grpc.StatusCode
API_KEY_ENV = "BLOCKRAG_API_KEY"
CONNECT_FAILED = "failed to connect to all addresses"
RESOLVE_FAILED = ("errors resolving", "DNS resolution failed")
# a handshake that failed on our side: "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: ..."
TLS_MARKERS = ("handshake failed", "ssl_error", "tsi_", "certificate_verify_failed", "wrong_version_number",
               "hostname verification")
# the peer hung up after accepting: a TLS server reading our plaintext, or refusing our (missing) certificate
CLOSED_MARKERS = ("socket closed", "connection reset", "broken pipe", "end of tcp stream")
LAST_ERROR = re.compile(r"last error: [A-Z_]+: (?:(?:ipv4|ipv6|unix|unix-abstract):\S*?: )?(.*)", re.S)


def explain(code: grpc.StatusCode, details: str, address: str, tls: TLSConfig) -> tuple[str | None, str]:
    """(kind, one-line message): kind is "unreachable", "tls", "unauthenticated", "permission", or
    None when the platform answered and its details say the rest."""
    if code == Code.UNAUTHENTICATED:
        hint = "" if "--api-key" in details else f" (the API key was missing or refused: pass --api-key or set ${API_KEY_ENV})"
        return "unauthenticated", f"UNAUTHENTICATED: {details}{hint}"
    if code == Code.PERMISSION_DENIED:
        return "permission", (f"PERMISSION_DENIED: {details} (the API key was accepted but may not do this: "
                              f"pass one whose role and tenant allow it, --api-key or ${API_KEY_ENV})")
    if code == Code.UNAVAILABLE and details.startswith(RESOLVE_FAILED):
        reason = details.rstrip("]").rsplit(": ", 1)[-1]
        return "unreachable", (f"unreachable: cannot resolve the host of {address} ({reason}): "
                               f"check --address or $BLOCKRAG_ADDRESS")
    if code == Code.UNAVAILABLE and details.startswith(CONNECT_FAILED):
        reason = _reason(details)
        lowered = details.lower()
        if any(m in lowered for m in TLS_MARKERS):
            return "tls", _tls_failed(lowered, reason, address, tls)
        if any(m in lowered for m in CLOSED_MARKERS):
            if tls.enabled:
                return "tls", (f"TLS: {address} closed the connection in the TLS handshake ({reason}): it may "
                               f"require a client certificate (--tls-cert and --tls-key, $BLOCKRAG_TLS_CERT and "
                               f"$BLOCKRAG_TLS_KEY) or refuse the one given")
            return "tls", (f"TLS: {address} closed the plaintext connection ({reason}): if it expects TLS (an "
                           f"Ingress does), pass --tls (and --tls-ca for a private CA) or set $BLOCKRAG_TLS=1")
        return "unreachable", (f"unreachable: nothing answers at {address} ({reason}): check --address or "
                               f"$BLOCKRAG_ADDRESS (locally: is `blockrag up` running?)")
    hint = (f" (is the platform running at {address}? start it with `blockrag up`)"
            if code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED) else "")
    return None, f"{code.name}: {details}{hint}"


def _tls_failed(lowered: str, reason: str, address: str, tls: TLSConfig) -> str:
    if "certificate_verify_failed" in lowered:
        return (f"TLS: the certificate of {address} is not trusted ({reason}): check --tls-ca or $BLOCKRAG_TLS_CA "
                f"(trusted now: {tls.describe_ca()})")
    if "hostname verification" in lowered:
        return (f"TLS: the certificate of {address} is not issued for {tls.server_name or address.rsplit(':', 1)[0]} "
                f"(Hostname Verification Check failed): connect by a name it carries (--address), or set "
                f"--tls-server-name or $BLOCKRAG_TLS_SERVER_NAME")
    if "wrong_version_number" in lowered:
        return (f"TLS: {address} does not speak TLS ({reason}): for a plaintext platform (`blockrag up`, a "
                f"port-forward) drop --tls and $BLOCKRAG_TLS*, or check --address")
    return (f"TLS: the handshake with {address} failed ({reason}): check --tls-ca, --tls-cert and --tls-key "
            f"($BLOCKRAG_TLS_CA, _CERT, _KEY)")


def _reason(details: str) -> str:
    """The last error of a failed connection, without gRPC's framing: "Connection refused",
    "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"."""
    match = LAST_ERROR.search(details)
    reason = match.group(1) if match else details
    reason = reason.removesuffix(": OK").strip()
    _, sep, openssl = reason.partition("OPENSSL_internal:")
    return openssl if sep else reason
