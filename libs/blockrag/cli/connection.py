"""How the CLIs reach a platform: the address, API key and TLS options, defined once for every
command that connects (`blockrag ingest`, `blockrag ask`, `blockrag-admin`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from blockrag.defaults import ADDRESS, ADDRESS_ENV

ADDRESS_HELP = f"host:port of the platform's gRPC proxy; default: ${ADDRESS_ENV} or {ADDRESS}."
API_KEY_HELP = "API key (brk_...) sent as `authorization: Bearer`, for a platform started with --auth."
ApiKeyOption = Annotated[str | None, typer.Option(envvar="BLOCKRAG_API_KEY", show_envvar=True, help=API_KEY_HELP)]

TLS_PANEL = "TLS (a platform behind an Ingress)"
TlsOption = Annotated[bool | None, typer.Option(
    "--tls/--no-tls", envvar="BLOCKRAG_TLS", show_envvar=True, rich_help_panel=TLS_PANEL,
    help="Speak TLS (the system roots unless --tls-ca). Default: on when --tls-ca, --tls-cert or "
         "--tls-server-name is given; --no-tls: plaintext, whatever else is set.")]
TlsCaOption = Annotated[Path | None, typer.Option(
    envvar="BLOCKRAG_TLS_CA", show_envvar=True, rich_help_panel=TLS_PANEL,
    help="PEM certificate(s) of the CA that signed the server's certificate.")]
TlsCertOption = Annotated[Path | None, typer.Option(
    envvar="BLOCKRAG_TLS_CERT", show_envvar=True, rich_help_panel=TLS_PANEL,
    help="PEM client certificate, for an Ingress that asks for one (mutual TLS); with --tls-key.")]
TlsKeyOption = Annotated[Path | None, typer.Option(
    envvar="BLOCKRAG_TLS_KEY", show_envvar=True, rich_help_panel=TLS_PANEL,
    help="PEM private key of --tls-cert.")]
TlsServerNameOption = Annotated[str | None, typer.Option(
    envvar="BLOCKRAG_TLS_SERVER_NAME", show_envvar=True, rich_help_panel=TLS_PANEL,
    help="The name the server's certificate must carry (and the Ingress host), when --address is not it.")]


def tls_config(tls: bool | None, ca: Path | None, cert: Path | None, key: Path | None, server_name: str | None):
    """The TLS options as the client's TLSConfig, validated (InvalidRequestError: one line, exit 1)."""
    from blockrag.client.tls import TLSConfig

    return TLSConfig.resolve(tls, ca, cert, key, server_name)
