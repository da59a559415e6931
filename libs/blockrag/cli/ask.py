"""`blockrag ask`: ask the platform a question over a collection or explicit blocks, over gRPC."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from blockrag.cli.connection import (ADDRESS_HELP, ApiKeyOption, TlsCaOption, TlsCertOption, TlsKeyOption, TlsOption,
                                    TlsServerNameOption, tls_config)

console = Console()


def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    collection: Annotated[str, typer.Option(help="Search this collection for the context blocks.")] = "default",
    block: Annotated[list[str] | None, typer.Option("--block", help="Explicit context block id (repeatable, in prompt order); replaces --collection.")] = None,
    address: Annotated[str | None, typer.Option(help=ADDRESS_HELP)] = None,
    tenant: Annotated[str, typer.Option(help="Tenant namespace (with an API key: the key's; leave empty).")] = "",
    api_key: ApiKeyOption = None,
    top_k: Annotated[int, typer.Option(min=0, help="Blocks taken from the collection (0: the service default).")] = 0,
    max_new_tokens: Annotated[int, typer.Option(min=0, max=4096, help="0: the service default.")] = 0,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="0 is greedy.")] = 0.0,
    tls: TlsOption = None,
    tls_ca: TlsCaOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    tls_server_name: TlsServerNameOption = None,
) -> None:
    """Answer QUESTION with block attention on the platform: cached blocks are reused, only the
    question is prefilled, the answer streams."""
    from blockrag.client import BlockRAGClient
    from blockrag.v1 import generation_pb2 as pb

    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")
    tls_settings = tls_config(tls, tls_ca, tls_cert, tls_key, tls_server_name)
    request = pb.GenerateRequest(question=question, max_new_tokens=max_new_tokens, temperature=temperature,
                                 tenant=tenant, top_k=top_k)
    if block:
        request.context.extend(pb.ContextBlock(block_id=b) for b in block)
    else:
        request.collection = collection
    console.print(f"[bold]Q:[/bold] {question}")
    console.print("[bold]A:[/bold] ", end="")
    usage = None
    with BlockRAGClient(address, api_key=api_key, tls=tls_settings) as client:
        for reply in client.generate(request):
            console.print(reply.text, end="", highlight=False, markup=False)
            console.file.flush()
            if reply.done:
                usage = reply.usage
    console.print()
    if usage is not None:
        console.print(usage_table(usage))


def usage_table(usage) -> Table:
    tiers = ", ".join(f"{n} from {tier}" for tier, n in sorted(usage.blocks_by_tier.items()) if n) or "none"
    table = Table(title="Usage", show_header=False, title_justify="left")
    table.add_row("context blocks", f"{len(usage.block_ids)}: {tiers}")
    table.add_row("prompt tokens", f"{usage.prompt_tokens}: {usage.cached_tokens} cached, "
                  f"{usage.computed_tokens} computed now")
    table.add_row("time to first token", f"{usage.ttft_ms:.0f} ms")
    table.add_row("answer", f"{usage.completion_tokens} tokens in {usage.e2e_ms:.0f} ms")
    return table
