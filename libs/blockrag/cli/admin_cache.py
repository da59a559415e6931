"""`blockrag-admin cache stats | sweep | evict`: the block KV cache, through AdminService (admin role)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from blockrag.cli.connection import ADDRESS_HELP

console = Console()
cache = typer.Typer(help="The block KV cache: statistics, orphan sweep, eviction.", no_args_is_help=True)
Address = Annotated[str | None, typer.Option(help=ADDRESS_HELP)]
UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
         "t": 1 << 40, "tib": 1 << 40}


def _client(ctx: typer.Context, address: str | None):
    from blockrag.cli.admin import _client as admin_client

    return admin_client(ctx, address)


def parse_bytes(text: str, option: str) -> int:
    """"512MiB", "2G", "1000" -> bytes (binary units; "" or "0": no bound)."""
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number):]
    try:
        value = float(number or "0")
    except ValueError:
        value = -1.0
    if unit not in UNITS or value < 0:
        raise typer.BadParameter(f"{text!r}: expected a size such as 512MiB, 2GiB or 1000 (bytes)", param_hint=option)
    return int(value * UNITS[unit])


@cache.command("stats")
def cache_stats(ctx: typer.Context, address: Address = None, tenant: Annotated[str, typer.Option(help="One tenant; default: all.")] = "") -> None:
    """Blocks, documents and KV entries in the index, and the generation replicas' memory tier."""
    from blockrag.v1 import admin_pb2

    with _client(ctx, address) as client:
        reply = client.admin_call("CacheStats", admin_pb2.CacheStatsRequest(tenant=tenant))
    i = reply.index
    table = Table(show_header=False, title="Cache index", title_justify="left")
    table.add_row("collections / documents / blocks", f"{i.collections} / {i.documents} / {i.blocks}")
    table.add_row("KV entries", f"{i.entries} ({_bytes(i.bytes)})")
    for v in i.by_model_version:
        table.add_row(f"  model {v.model_version[:16]}", f"{v.entries} entries ({_bytes(v.bytes)})")
    console.print(table)
    if reply.tenants:
        tenants = Table("tenant", "KV entries", "bytes", title="By tenant (eviction's watermarks apply to these)",
                        title_justify="left")
        for t in reply.tenants:
            tenants.add_row(t.tenant, str(t.entries), _bytes(t.bytes))
        console.print(tenants)
    replicas = Table("replica", "tier", "entries", "bytes", "capacity", "hits", "misses",
                     title="Generation replicas (memory tiers, fastest first)", title_justify="left")
    for r in reply.replicas:
        for t in r.tiers:
            replicas.add_row(r.replica, t.tier, str(t.entries), _bytes(t.bytes), _bytes(t.capacity_bytes), str(t.hits),
                             str(t.misses))
        if len(r.tiers) != 1:  # one tier: its row is the total
            replicas.add_row(r.replica, "all", str(r.entries), _bytes(r.bytes), _bytes(r.capacity_bytes), str(r.hits),
                             str(r.misses))
    console.print(replicas)


@cache.command("sweep")
def cache_sweep(
    ctx: typer.Context,
    grace: Annotated[float, typer.Option(min=0, help="Keep objects younger than this many seconds (writes may be in "
                                                     "flight); 0: the platform's default, an hour.")] = 0,
    dry_run: Annotated[bool, typer.Option(help="Count the orphans, delete nothing.")] = False,
    address: Address = None,
) -> None:
    """Delete KV objects no index entry names (left by crashed writers or evictions)."""
    from blockrag.v1 import admin_pb2

    with _client(ctx, address) as client:
        r = client.admin_call("SweepCache", admin_pb2.SweepCacheRequest(grace_s=grace, dry_run=dry_run))
    verb = "would delete" if dry_run else "deleted"
    console.print(f"Swept {r.scanned} entry objects: {verb} {r.deleted} orphans ({_bytes(r.deleted_bytes)}); "
                  f"{r.young} younger than the grace period kept; {r.expired_writes} abandoned writes expired, "
                  f"{r.partial_writes} partial writes removed")


@cache.command("evict")
def cache_evict(
    ctx: typer.Context,
    tenant_high: Annotated[str, typer.Option(help="Evict a tenant over this size (512MiB, 2GiB...) ...")] = "",
    tenant_low: Annotated[str, typer.Option(help="... down to this size (default: the high watermark).")] = "",
    store_high: Annotated[str, typer.Option(help="Evict the store (every tenant) over this size ...")] = "",
    store_low: Annotated[str, typer.Option(help="... down to this size (default: the high watermark).")] = "",
    ttl: Annotated[float, typer.Option(min=0, help="Evict entries not used for this many seconds (0: no TTL).")] = 0,
    tenant: Annotated[str | None, typer.Option(help='Only this tenant ("" the default one); default: all.')] = None,
    address: Address = None,
) -> None:
    """Evict least recently used KV entries by watermarks, and idle ones by TTL.

    Rows go first, then their objects: a generation in flight keeps the blocks it read."""
    from blockrag.v1 import admin_pb2

    def marks(high: str, low: str, option: str) -> admin_pb2.Watermarks | None:
        h = parse_bytes(high, f"--{option}-high")
        return admin_pb2.Watermarks(high_bytes=h, low_bytes=parse_bytes(low, f"--{option}-low") if low else h) \
            if h else None

    request = admin_pb2.EvictCacheRequest(tenant_bounds=marks(tenant_high, tenant_low, "tenant"),
                                          store_bounds=marks(store_high, store_low, "store"), ttl_s=ttl)
    if tenant is not None:
        request.tenant = tenant
    if not (request.HasField("tenant_bounds") or request.HasField("store_bounds") or ttl):
        raise typer.BadParameter("give a bound: --tenant-high, --store-high or --ttl")
    with _client(ctx, address) as client:
        r = client.admin_call("EvictCache", request)
    console.print(f"Evicted {r.entries} entries ({_bytes(r.bytes)})"
                  + (": " + ", ".join(f"{k} {v}" for k, v in sorted(r.by_reason.items())) if r.by_reason else ""))
    if r.tenants:
        table = Table("tenant", "entries", "bytes", title_justify="left")
        for t in r.tenants:
            table.add_row(t.tenant, str(t.entries), _bytes(t.bytes))
        console.print(table)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
