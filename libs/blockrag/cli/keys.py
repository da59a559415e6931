"""`blockrag keys bootstrap`: the first admin API key, written to the index database directly.

With authentication on, creating a key over gRPC needs an admin key, so the first one cannot come
that way. This command needs what the platform itself needs, the database (its URL and
credentials, or the local state directory), not the network: whoever has that already controls
every tenant's data. It refuses while an active admin key exists (--force: every admin key lost).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)
app = typer.Typer(help="API keys, on the index database directly (the first admin key).", no_args_is_help=True)


@app.command()
def bootstrap(
    tenant: Annotated[str, typer.Option(help="The admin key's own tenant (for its data-plane calls).")] = "default",
    label: Annotated[str, typer.Option(help="A note for `keys list`.")] = "bootstrap",
    database_url: Annotated[str, typer.Option(help="The platform's index database; default: the SQLite file of `blockrag up` ($BLOCKRAG_HOME/platform, or --state-dir).")] = "",
    state_dir: Annotated[Path | None, typer.Option(help="The --state-dir `blockrag up` was started with.")] = None,
    force: Annotated[bool, typer.Option(help="Create one even though an admin key exists (all admin keys lost).")] = False,
) -> None:
    """Create an admin key when none exists and print it (once; the index keeps its hash). Then
    create the others with `blockrag-admin --api-key <it> keys create`."""
    from blockrag.auth import KeyStore
    from blockrag.kvcache.index import open_index_engine
    from blockrag_services.config import PlatformConfig

    if state_dir is not None and not database_url:
        database_url = f"sqlite:///{state_dir.resolve() / 'index.db'}"
    engine = open_index_engine(database_url or PlatformConfig().database)
    try:
        record, key = KeyStore(engine).create_first_admin(tenant, label, force=force)
    finally:
        engine.dispose()
    console.print(f"[green]Created[/green] admin key {record.key_id} (tenant {record.tenant!r}). The key, shown once:")
    print(key.text)
