"""`blockrag-admin keys create | list | revoke`: API keys, through AdminService (admin role)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from blockrag.cli.connection import ADDRESS_HELP

console = Console()
keys = typer.Typer(help="API keys: each has a tenant and a role (reader, writer, admin).", no_args_is_help=True)
Address = Annotated[str | None, typer.Option(help=ADDRESS_HELP)]
ROLES = ("reader", "writer", "admin")


def _client(ctx: typer.Context, address: str | None):
    from blockrag.cli.admin import _client as admin_client

    return admin_client(ctx, address)


def _role_name(role: int) -> str:
    from blockrag.v1 import admin_pb2

    return admin_pb2.Role.Name(role).removeprefix("ROLE_").lower()


@keys.command("create")
def create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="The tenant every call with this key acts for.")],
    role: Annotated[str, typer.Option(help="reader (ask), writer (ingest and ask) or admin (everything).")],
    label: Annotated[str, typer.Option(help="A note for `keys list`: who or what uses it.")] = "",
    address: Address = None,
) -> None:
    """Create a key and print it: the only time it is shown (the platform keeps its hash)."""
    from blockrag.v1 import admin_pb2

    if role.strip().lower() not in ROLES:
        raise typer.BadParameter(f"{role!r}: use one of {', '.join(ROLES)}", param_hint="--role")
    request = admin_pb2.CreateApiKeyRequest(tenant=tenant, label=label,
                                            role=admin_pb2.Role.Value(f"ROLE_{role.strip().upper()}"))
    with _client(ctx, address) as client:
        reply = client.admin_call("CreateApiKey", request)
    k = reply.key
    console.print(f"[green]Created[/green] {k.key_id}: tenant {k.tenant!r}, role {_role_name(k.role)}. "
                  f"The key (shown once; store it now):", highlight=False)
    print(reply.api_key)  # plain stdout, one line: `$(blockrag-admin keys create ...)` captures it


@keys.command("list")
def list_(ctx: typer.Context, tenant: Annotated[str | None, typer.Option(help="One tenant's keys; default: all.")] = None,
          address: Address = None) -> None:
    """Every key, revoked ones too (never a secret)."""
    from blockrag.v1 import admin_pb2

    request = admin_pb2.ListApiKeysRequest()
    if tenant is not None:
        request.tenant = tenant
    with _client(ctx, address) as client:
        reply = client.admin_call("ListApiKeys", request)
    table = Table("key", "tenant", "role", "label", "created", "revoked", title_justify="left")
    for k in reply.keys:
        table.add_row(k.key_id, k.tenant, _role_name(k.role), k.label, _time(k.created_at),
                      _time(k.revoked_at) if k.revoked_at else "")
    console.print(table if reply.keys else "No API keys yet.")


@keys.command("revoke")
def revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id (key_...), as `keys list` shows it.")],
           address: Address = None) -> None:
    """Revoke a key: its next call is refused (UNAUTHENTICATED)."""
    from blockrag.v1 import admin_pb2

    with _client(ctx, address) as client:
        k = client.admin_call("RevokeApiKey", admin_pb2.RevokeApiKeyRequest(key_id=key_id)).key
    console.print(f"[green]Revoked[/green] {k.key_id} (tenant {k.tenant!r}, role {_role_name(k.role)})")


def _time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""
