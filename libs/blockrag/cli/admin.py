"""`blockrag-admin`: operate the platform through its AdminService (gRPC only)."""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from blockrag.cli.admin_cache import cache
from blockrag.cli.admin_keys import keys
from blockrag.cli.connection import (ADDRESS_HELP, ApiKeyOption, TlsCaOption, TlsCertOption, TlsKeyOption, TlsOption,
                                    TlsServerNameOption, tls_config)
from blockrag.client.client import API_KEY_ENV

console = Console()
app = typer.Typer(help="Operate a BlockRAG platform over gRPC (AdminService).", no_args_is_help=True,
                  pretty_exceptions_enable=False)
model = typer.Typer(help="Model versions: the models the replicas loaded and the registry's versions.",
                    no_args_is_help=True)
distill = typer.Typer(help="Block distillation runs (each registers a model version).", no_args_is_help=True)
app.add_typer(model, name="model")
app.add_typer(model, name="models", hidden=True)  # the older spelling
app.add_typer(distill, name="distill")
app.add_typer(cache, name="cache")
app.add_typer(keys, name="keys")
Address = Annotated[str | None, typer.Option(help=ADDRESS_HELP)]
Tenant = Annotated[str, typer.Option(help='Tenant scope; "" (default) is the shared one.')]
FINISHED = ("succeeded", "failed", "cancelled")


@app.callback()
def options(ctx: typer.Context, api_key: ApiKeyOption = None, tls: TlsOption = None, tls_ca: TlsCaOption = None,
            tls_cert: TlsCertOption = None, tls_key: TlsKeyOption = None,
            tls_server_name: TlsServerNameOption = None) -> None:
    """Operate a BlockRAG platform over gRPC (AdminService). With authentication on, every
    command needs an admin API key: --api-key (before the command) or $BLOCKRAG_API_KEY. Behind
    an Ingress: --tls and the other --tls-* options (before the command), or $BLOCKRAG_TLS*."""
    if api_key:
        # the one setting every subcommand's client shares: handed on as the variable it reads
        os.environ[API_KEY_ENV] = api_key
    # validated here, once, before any subcommand; its client takes it from the root context
    ctx.obj = tls_config(tls, tls_ca, tls_cert, tls_key, tls_server_name)


def _client(ctx: typer.Context, address: str | None):
    """The client of a subcommand: its --address, the root's TLS settings (the callback's)."""
    from blockrag.client import BlockRAGClient, TLSConfig

    tls = ctx.find_root().obj
    return BlockRAGClient(address, timeout_s=60, tls=tls if isinstance(tls, TLSConfig) else None)


@app.command()
def health(ctx: typer.Context, address: Address = None) -> None:
    """Health of every service; exit status 1 if any is unhealthy."""
    from blockrag.v1 import admin_pb2

    with _client(ctx, address) as client:
        reply = client.admin_call("Health", admin_pb2.HealthRequest())
    table = Table("service", "status", "latency", "detail", title=f"BlockRAG at {client.address}",
                  title_justify="left")
    for s in reply.services:
        table.add_row(s.service, "[green]healthy[/green]" if s.healthy else "[red]unhealthy[/red]",
                      f"{s.latency_ms:.0f} ms", s.detail)
    console.print(table)
    if not all(s.healthy for s in reply.services):
        raise typer.Exit(1)


@model.command("list")
def model_list(ctx: typer.Context, address: Address = None) -> None:
    """The models the replicas loaded (the serving one marked) and the registry's versions."""
    from blockrag.v1 import admin_pb2

    with _client(ctx, address) as client:
        reply = client.admin_call("ListModelVersions", admin_pb2.ListModelVersionsRequest())
    table = Table("version", "serving", "source", "dtype", "device", "gate (key / logit error)", title="Loaded",
                  title_justify="left")
    for v in reply.versions:
        table.add_row(v.version[:16], "yes" if v.serving else "", v.source, v.dtype, v.device,
                      f"{v.gate_key_error:.1e} / {v.gate_logit_error:.1e}")
    console.print(table)
    registry = Table("version", "scope", "status", "parent", "KL (active)", "accuracy (active)", "created",
                     title="Registry", title_justify="left")
    for v in reply.registered:
        e = v.evaluation
        registry.add_row(v.version_id, _scope(v.tenant), _version_status(v), v.parent_version or "base",
                         _pair(e, "kl", "active_kl", "{:.3f}"), _pair(e, "accuracy", "active_accuracy", "{:.0%}"),
                         _time(v.created_at))
    console.print(registry if reply.registered else "Registry: no distilled versions yet.")
    # after the table, not in it: the gate's reason is a sentence or two
    for v in reply.registered:
        if v.refusal:
            console.print(f"[red]{v.version_id} refused[/red]: {v.refusal}", soft_wrap=True)


@model.command("promote")
def model_promote(ctx: typer.Context, version: Annotated[str, typer.Argument(help="A version id (mv_...).")],
                  tenant: Annotated[str | None, typer.Option(help="Scope to serve; default: the version's own.")] = None,
                  address: Address = None) -> None:
    """Make VERSION the active one of its scope (the replicas switch to it)."""
    from blockrag.v1 import admin_pb2

    request = admin_pb2.PromoteModelVersionRequest(version=version)
    if tenant is not None:
        request.tenant = tenant
    with _client(ctx, address) as client:
        v = client.admin_call("PromoteModelVersion", request).version
    console.print(f"[green]Promoted[/green] {v.version_id}: active for {_scope(v.tenant)}")


@model.command("rollback")
def model_rollback(ctx: typer.Context, tenant: Tenant = "", address: Address = None) -> None:
    """Undo the scope's latest promotion: the version active before it serves again."""
    from blockrag.v1 import admin_pb2

    with _client(ctx, address) as client:
        reply = client.admin_call("RollbackModelVersion", admin_pb2.RollbackModelVersionRequest(tenant=tenant))
    now = reply.version.version_id if reply.HasField("version") else "the base model"
    console.print(f"[green]Rolled back[/green] {_scope(tenant)}: {now} serves it now")


# -- distillation runs ------------------------------------------------------------------------------


@distill.command("start")
def distill_start(
    ctx: typer.Context,
    collection: Annotated[str, typer.Option(help="Train on this collection of the tenant.")] = "",
    directory: Annotated[str, typer.Option(help="Or on the text files of this directory (where the job runs).")] = "",
    tenant: Tenant = "",
    steps: Annotated[int, typer.Option(min=0, help="Training steps (0: the platform's default).")] = 0,
    examples: Annotated[int, typer.Option(min=0, help="Training examples to build (0: default).")] = 0,
    eval_questions: Annotated[int, typer.Option(min=0, help="Held-out QA questions of the evaluation (0: default).")] = 0,
    set_: Annotated[list[str] | None, typer.Option("--set", help="A distillation setting, KEY=VALUE (lora.rank=8); repeatable.")] = None,
    auto_promote: Annotated[bool, typer.Option(help="Promote the new version if it beats the active one.")] = False,
    watch: Annotated[bool, typer.Option(help="Then follow it until it ends.")] = False,
    address: Address = None,
) -> None:
    """Start a distillation run in the background.

    Its data: a collection of the tenant, a directory, or neither (the default corpus), plus the
    tenant's logged questions. It registers a model version; --auto-promote makes it active if
    it evaluates better than the active one."""
    from blockrag.v1 import admin_pb2

    request = admin_pb2.StartDistillationRequest(
        tenant=tenant, collection=collection, directory=directory, steps=steps, examples=examples,
        eval_questions=eval_questions, config_json=json.dumps(_settings(set_ or [])), auto_promote=auto_promote)
    with _client(ctx, address) as client:
        run = client.admin_call("StartDistillation", request).run
    console.print(f"Started {run.run_id} for {_scope(run.tenant)}: {run.total_steps} steps. "
                  f"Follow it with: blockrag-admin distill watch {run.run_id}")
    if watch:
        distill_watch(ctx, run.run_id, address)


@distill.command("status")
def distill_status(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="A run id (run_...).")], address: Address = None) -> None:
    """A run's state, latest figures and, once done, the version it registered."""
    from blockrag.v1 import admin_pb2

    with _client(ctx, address) as client:
        reply = client.admin_call("GetDistillation", admin_pb2.GetDistillationRequest(run_id=run_id))
    r = reply.run
    table = Table(show_header=False, title=f"Distillation run {r.run_id}", title_justify="left")
    table.add_row("scope", _scope(r.tenant))
    table.add_row("status", _status(r.status) + (" (cancel requested)" if r.cancel_requested and r.status not in FINISHED else ""))
    table.add_row("step", f"{r.step} / {r.total_steps}" + (f"  ({r.phase})" if r.phase else ""))
    table.add_row("loss / KL / tokens/s", f"{r.loss:.4f} / {r.kl:.4f} / {r.tokens_per_s:.0f}")
    table.add_row("started / updated", f"{_time(r.created_at)} / {_time(r.updated_at)}")
    if r.error:
        table.add_row("error", r.error)
    if reply.HasField("version"):
        v = reply.version
        table.add_row("version", f"{v.version_id} ({_version_status(v)})")
        if v.refusal:
            table.add_row("  refusal", v.refusal)
        for key in ("kl", "active_kl", "base_kl", "accuracy", "active_accuracy", "base_accuracy", "full_accuracy",
                    "heldout_kl", "heldout_kl_start"):
            if key in v.evaluation:
                table.add_row(f"  {key}", f"{v.evaluation[key]:.4f}")
    console.print(table)


@distill.command("watch")
def distill_watch(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="A run id (run_...).")], address: Address = None) -> None:
    """Follow a run live (steps, loss, KL, tokens/s) until it ends; exit status 1 unless it succeeded."""
    from blockrag.v1 import admin_pb2

    last = None
    with _client(ctx, address) as client, Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("{task.fields[figures]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(run_id, total=None, figures="")
        for reply in _stream(client, "WatchDistillation", admin_pb2.WatchDistillationRequest(run_id=run_id)):
            last = r = reply.run
            figures = f"loss {r.loss:.4f}  KL {r.kl:.4f}  {r.tokens_per_s:.0f} tok/s" if r.step else ""
            progress.update(task, total=r.total_steps, completed=r.step, figures=figures,
                            description=f"{run_id} {r.phase or r.status}")
    if last is None:
        raise typer.Exit(1)
    ended = f"{run_id} {_status(last.status)}"
    if last.version_id:
        ended += f": registered {last.version_id}"
        metrics = json.loads(last.metrics_json or "{}")
        e = metrics.get("evaluation", {})
        if "kl" in e and "active_kl" in e:
            ended += (f" (answer-token KL {e['kl']:.4f} vs {e['active_kl']:.4f} active, accuracy "
                      f"{e.get('accuracy', 0):.0%} vs {e.get('active_accuracy', 0):.0%})")
        if metrics.get("promoted"):
            ended += ", promoted"
    if last.error:
        ended += f": {last.error}"
    console.print(ended)
    if last.status != "succeeded":
        raise typer.Exit(1)


@distill.command("list")
def distill_list(ctx: typer.Context, tenant: Annotated[str | None, typer.Option(help='One scope ("" the shared one); default: all.')] = None,
                 address: Address = None) -> None:
    """The latest runs, newest first."""
    from blockrag.v1 import admin_pb2

    request = admin_pb2.ListDistillationsRequest()
    if tenant is not None:
        request.tenant = tenant
    with _client(ctx, address) as client:
        reply = client.admin_call("ListDistillations", request)
    table = Table("run", "scope", "status", "step", "loss", "KL", "version", "started", title_justify="left")
    for r in reply.runs:
        table.add_row(r.run_id, _scope(r.tenant), _status(r.status), f"{r.step}/{r.total_steps}", f"{r.loss:.4f}",
                      f"{r.kl:.4f}", r.version_id, _time(r.created_at))
    console.print(table if reply.runs else "No distillation runs yet.")


@distill.command("cancel")
def distill_cancel(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="A run id (run_...).")], address: Address = None) -> None:
    """Stop a run: now if it has not started, else after its current step (with a checkpoint)."""
    from blockrag.v1 import admin_pb2

    with _client(ctx, address) as client:
        run = client.admin_call("CancelDistillation", admin_pb2.CancelDistillationRequest(run_id=run_id)).run
    console.print(f"{run.run_id}: cancelled" if run.status == "cancelled" else
                  f"{run.run_id}: cancel requested; it stops after its current step")


def _stream(client, name: str, request):
    """A server-streaming AdminService call, errors as the client's one-line PlatformError."""
    import grpc

    try:
        yield from getattr(client.admin, name)(request, metadata=client.metadata("admin"))
    except grpc.RpcError as e:
        raise client.error(e) from None


def _settings(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE items as a nested dict; values as JSON where they parse (8, 1e-3, true, null), else strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE, e.g. learning_rate=1e-3 or lora.rank=8",
                                     param_hint="--set")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        *parents, last = key.strip().split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _scope(tenant: str) -> str:
    return f"tenant {tenant!r}" if tenant else "the shared scope"


def _status(status: str) -> str:
    color = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(status)
    return f"[{color}]{status}[/{color}]" if color else status


def _version_status(version) -> str:
    """A RegisteredVersion's status, "failed (refused)" for one a replica refused to serve."""
    return f"{version.status} (refused)" if version.refusal else version.status


def _pair(evaluation, key: str, active: str, fmt: str) -> str:
    if key not in evaluation:
        return ""
    return fmt.format(evaluation[key]) + (f" ({fmt.format(evaluation[active])})" if active in evaluation else "")


def _time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def main() -> None:
    from blockrag.cli.app import run

    run(app)
