"""`blockrag-admin`: operate the platform through its AdminService (gRPC only)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from blockrag.cli.ingest import ADDRESS_HELP

console = Console()
app = typer.Typer(help="Operate a BlockRAG platform over gRPC (AdminService).", no_args_is_help=True,
                  pretty_exceptions_enable=False)
models = typer.Typer(help="Model versions.", no_args_is_help=True)
cache = typer.Typer(help="The block KV cache.", no_args_is_help=True)
app.add_typer(models, name="models")
app.add_typer(cache, name="cache")
Address = Annotated[str | None, typer.Option(help=ADDRESS_HELP)]


def _client(address: str | None):
    from blockrag.client import BlockRAGClient

    return BlockRAGClient(address, timeout_s=60)


@app.command()
def health(address: Address = None) -> None:
    """Health of every service; exit status 1 if any is unhealthy."""
    from blockrag.v1 import admin_pb2

    with _client(address) as client:
        reply = client.admin_call("Health", admin_pb2.HealthRequest())
    table = Table("service", "status", "latency", "detail", title=f"BlockRAG at {client.address}",
                  title_justify="left")
    for s in reply.services:
        table.add_row(s.service, "[green]healthy[/green]" if s.healthy else "[red]unhealthy[/red]",
                      f"{s.latency_ms:.0f} ms", s.detail)
    console.print(table)
    if not all(s.healthy for s in reply.services):
        raise typer.Exit(1)


@models.command("list")
def models_list(address: Address = None) -> None:
    """Model versions known to the platform; the serving one is marked."""
    from blockrag.v1 import admin_pb2

    with _client(address) as client:
        reply = client.admin_call("ListModelVersions", admin_pb2.ListModelVersionsRequest())
    table = Table("version", "serving", "source", "dtype", "device", "gate (key / logit error)", title_justify="left")
    for v in reply.versions:
        table.add_row(v.version[:16], "yes" if v.serving else "", v.source, v.dtype, v.device,
                      f"{v.gate_key_error:.1e} / {v.gate_logit_error:.1e}")
    console.print(table)


@cache.command("stats")
def cache_stats(address: Address = None, tenant: Annotated[str, typer.Option(help="One tenant; default: all.")] = "") -> None:
    """Blocks, documents and KV entries in the index, and the generation replicas' memory tier."""
    from blockrag.v1 import admin_pb2

    with _client(address) as client:
        reply = client.admin_call("CacheStats", admin_pb2.CacheStatsRequest(tenant=tenant))
    i = reply.index
    table = Table(show_header=False, title="Cache index", title_justify="left")
    table.add_row("collections / documents / blocks", f"{i.collections} / {i.documents} / {i.blocks}")
    table.add_row("KV entries", f"{i.entries} ({_bytes(i.bytes)})")
    for v in i.by_model_version:
        table.add_row(f"  model {v.model_version[:16]}", f"{v.entries} entries ({_bytes(v.bytes)})")
    console.print(table)
    replicas = Table("replica", "entries", "bytes", "capacity", "hits", "misses", title="Generation replicas (memory tier)",
                     title_justify="left")
    for r in reply.replicas:
        replicas.add_row(r.replica, str(r.entries), _bytes(r.bytes), _bytes(r.capacity_bytes), str(r.hits), str(r.misses))
    console.print(replicas)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main() -> None:
    from blockrag.cli.app import run

    run(app)
