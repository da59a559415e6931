"""`blockrag ingest`: send documents to the platform; their blocks are segmented and cached."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from blockrag.cli.connection import (ADDRESS_HELP, ApiKeyOption, TlsCaOption, TlsCertOption, TlsKeyOption, TlsOption,
                                    TlsServerNameOption, tls_config)
from blockrag.documents import read_documents

console = Console()


def ingest(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or directories (.md/.txt/.rst); default: the bundled samples.")] = None,
    collection: Annotated[str, typer.Option(help="Collection the documents go into.")] = "default",
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    tenant: Annotated[str, typer.Option(help="Tenant namespace (with an API key: the key's; leave empty).")] = "",
    api_key: ApiKeyOption = None,
    batch: Annotated[int, typer.Option(min=1, help="Documents per request.")] = 8,
    max_block_tokens: Annotated[int, typer.Option(min=0, help="Longest block, in tokens (0: the service default).")] = 0,
    granularity: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="1.0 keeps paragraphs apart, 0.0 merges neighbours up to the longest block; default: the service's.")] = None,
    tls: TlsOption = None,
    tls_ca: TlsCaOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_server_name: TlsServerNameOption = None,
) -> None:
    """Ingest documents into COLLECTION: segmented into blocks, each block's KV computed once."""
    from blockrag.client import BlockRAGClient, PlatformError
    from blockrag.samples import sample_paths

    tls_settings = tls_config(tls, tls_ca, tls_cert, tls_key, tls_server_name)
    read = read_documents(paths or [Path(p) for p in sample_paths()])
    names = [Path(p).name for p in read]  # document ids: file names, or paths where names repeat
    documents = list(zip(names if len(set(names)) == len(names) else list(read), read.values()))
    blocks = computed = 0
    sizes: list[int] = []
    failed: list[tuple[str, str]] = []  # (document id, reason): not ingested, the others were
    with BlockRAGClient(address, api_key=api_key, tls=tls_settings) as client, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True) as progress:
        task = progress.add_task(f"Ingesting into {collection!r}", total=len(documents))
        for start in range(0, len(documents), batch):
            options = {"max_block_tokens": max_block_tokens}
            if granularity is not None:
                options["granularity"] = granularity
            try:
                reply = client.ingest(collection, documents[start:start + batch], tenant=tenant, partial=True,
                                      **options)
            except PlatformError as e:
                if not start:  # nothing ingested: the error alone says it
                    raise
                # the requests before were answered: theirs stay in, this one's and the rest are listed
                failed += [(i, str(e)) for i, _ in documents[start:start + batch]]
                failed += [(i, "not sent after the error above") for i, _ in documents[start + batch:]]
                break
            blocks += sum(len(d.block_ids) for d in reply.documents)
            sizes.extend(n for d in reply.documents for n in d.block_tokens)
            computed += reply.computed_blocks
            failed += [(d.document_id, d.reason) for d in reply.failed_documents]
            progress.advance(task, len(reply.documents) + len(reply.failed_documents))
    count = f"{len(documents) - len(failed)} of {len(documents)}" if failed else f"{len(documents)}"
    console.print(f"Ingested {count} documents into [bold]{collection}[/bold] at {client.address}: "
                  f"{blocks} blocks, {computed} computed now, {blocks - computed} already cached.")
    if sizes:
        console.print(f"Block sizes: {min(sizes)} to {max(sizes)} tokens, mean {sum(sizes) / len(sizes):.0f}.")
    if failed:
        # each listed document is absent whole (the object store failed or a quota was reached midway); run again for them
        table = Table("document", "reason", title=f"[red]{len(failed)} document(s) NOT ingested[/red]",
                      title_justify="left")
        for document_id, reason in failed:
            table.add_row(document_id, reason)
        console.print(table)
        raise typer.Exit(1)
