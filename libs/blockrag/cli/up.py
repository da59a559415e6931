"""`blockrag up`: the whole platform on this machine, in the foreground until Ctrl-C."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from blockrag import defaults  # light: imports nothing
from blockrag.errors import InvalidRequestError
from blockrag.model_spec import ModelSpec  # light: no torch
from blockrag.scheduler import SchedulerSettings  # light: no torch
from blockrag_services.drain import DEFAULT_GRACE_S  # light: no Ray, no torch

console = Console()


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _auth_notice(config, state_dir: Path | None) -> str:
    """Say plainly whether the port is open, and how to get the first admin key."""
    if not config.auth:
        return ("[yellow]Authentication is OFF:[/yellow] anyone who reaches the gRPC port may ingest, ask and "
                "administer (the cache index and precompute still need an admin key). Start with --auth to "
                "require API keys.")
    from blockrag.auth import KeyStore
    from blockrag.kvcache.index import open_index_engine

    engine = open_index_engine(config.database)
    try:
        admins = KeyStore(engine).admins()
    finally:
        engine.dispose()
    if admins:
        return f"Authentication is on: every call needs an API key ({len(admins)} admin key(s) exist)."
    where = f" --state-dir {state_dir}" if state_dir else (" --database-url ..." if config.database_url else "")
    return ("Authentication is on, and no admin key exists yet: create one with "
            f"`blockrag keys bootstrap{where}`, then others with `blockrag-admin --api-key <it> keys create`.")


def up(
    host: Annotated[str, typer.Option(help="Address the gRPC proxy and the metrics exporter listen on.")] = defaults.LOCAL_HOST,
    grpc_port: Annotated[int, typer.Option(help="gRPC port of every service.")] = defaults.GRPC_PORT,
    metrics_port: Annotated[int, typer.Option(help="Prometheus scrape port (0: any free port).")] = defaults.METRICS_PORT,
    http_port: Annotated[int, typer.Option(help="Ray Serve's HTTP proxy port (unused by the platform).")] = defaults.HTTP_PORT,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs Ray may schedule on; default: all.")] = None,
    database_url: Annotated[str, typer.Option(help="SQLAlchemy URL of the cache index; default: a SQLite file under $BLOCKRAG_HOME/platform.")] = "",
    object_store_url: Annotated[str, typer.Option(help="Directory or s3://bucket/prefix?endpoint=host:port for KV entries; default: under $BLOCKRAG_HOME/platform.")] = "",
    model: Annotated[str | None, typer.Option(help="Hub id, local directory or .gguf file; default: the embedded SmolLM2-135M-Instruct.")] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = ModelSpec.dtype,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = ModelSpec.device,
    state_dir: Annotated[Path | None, typer.Option(help="Where the default index, KV entries and metrics files go; default: $BLOCKRAG_HOME/platform.")] = None,
    ready_file: Annotated[Path | None, typer.Option(help="Write the addresses here as JSON once every service is up.")] = None,
    auth: Annotated[bool, typer.Option(help="Require an API key on every call (create the first admin key with `blockrag keys bootstrap`).")] = False,
    distill_schedule: Annotated[str, typer.Option(help='Start a block distillation run (shared scope, default corpus) periodically: an interval ("6h") or a cron expression ("0 3 * * *"); default: never.')] = "",
    grace_period: Annotated[float, typer.Option(min=0, help="On SIGTERM or Ctrl-C, seconds the requests in flight have to finish (new ones get UNAVAILABLE) before the services stop.")] = DEFAULT_GRACE_S,
    quota_stored_bytes: Annotated[int, typer.Option(min=0, help="Per-tenant quota on stored KV bytes (0: none).")] = 0,
    quota_precompute_tokens: Annotated[int, typer.Option(min=0, help="Per-tenant quota on block tokens precomputed per minute (0: none).")] = 0,
    answer_slots: Annotated[int, typer.Option(min=1, help="Answers each generation replica decodes together (1: one at a time).")] = SchedulerSettings.slots,
    tls_cert: Annotated[Path | None, typer.Option(help="Serve the gRPC port with TLS: the server's certificate chain (PEM). Ray's plaintext port then moves to an internal port (--internal-grpc-port) to keep closed to the outside.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The private key (PEM) of --tls-cert.")] = None,
    tls_client_ca: Annotated[Path | None, typer.Option(help="With TLS, require client certificates signed by this CA (PEM).")] = None,
    internal_grpc_port: Annotated[int, typer.Option(min=0, help="With TLS, Ray's plaintext gRPC port (0: any free port).")] = 0,
    cache_maintenance_interval: Annotated[float, typer.Option(min=0, help="Seconds between the cache maintenance passes (eviction within the configured bounds, then the sweep of orphan objects), the first one interval after start; 0: off.")] = defaults.CACHE_MAINTENANCE_INTERVAL_S,
    replica_cache_bytes: Annotated[int | None, typer.Option(min=0, help="Bytes of decoded blocks each generation replica keeps in memory (0: none); default: the config's (512 MiB).")] = None,
) -> None:
    """Start a local Ray and every service (segmentation, precompute, cache index, generation,
    admin) behind one gRPC address; stay in the foreground until Ctrl-C or SIGTERM, then remove
    the ready file, let the requests in flight finish (at most --grace-period) and shut down."""
    from blockrag.kvcache.maintenance import CacheMaintenance
    from blockrag_services.config import Distill, PlatformConfig, Quotas
    from blockrag_services.platform import LocalPlatform, PlatformOptions
    from blockrag_services.server_tls import ServerTLS

    if (tls_cert is None) != (tls_key is None) or (tls_client_ca is not None and tls_cert is None):
        raise InvalidRequestError("TLS needs --tls-cert and --tls-key together (and --tls-client-ca only with them)")
    tls = ServerTLS(tls_cert, tls_key, tls_client_ca) if tls_cert is not None else None

    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        database_url = database_url or f"sqlite:///{state_dir.resolve() / 'index.db'}"
        object_store_url = object_store_url or str(state_dir.resolve() / "kv")
    config = PlatformConfig(database_url=database_url, object_store_url=object_store_url,
                            model=ModelSpec(model=model, dtype=dtype, device=device),
                            distill=Distill(schedule=distill_schedule), auth=auth,
                            quotas=Quotas(max_stored_bytes=quota_stored_bytes,
                                          max_precompute_tokens_per_minute=quota_precompute_tokens),
                            scheduler=SchedulerSettings(slots=answer_slots),
                            cache_maintenance=CacheMaintenance(interval_s=cache_maintenance_interval),
                            **({} if replica_cache_bytes is None else {"replica_cache_bytes": replica_cache_bytes}))
    platform = LocalPlatform(PlatformOptions(host=host, grpc_port=grpc_port, http_port=http_port,
                                             metrics_port=metrics_port, num_cpus=num_cpus, config=config,
                                             metrics_dir=state_dir / "metrics" if state_dir else None,
                                             tls=tls, internal_grpc_port=internal_grpc_port))
    # SIGTERM (kill, Kubernetes, CI) shuts down as cleanly as Ctrl-C (LocalPlatform.start keeps
    # this handler over the one Ray installs)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    started = False
    try:
        with console.status("Starting the platform...") as status:
            platform.start(progress=lambda text: status.update(f"{text}..."))
        started = True
        console.print(f"[green]BlockRAG is up.[/green] gRPC: [bold]{platform.grpc_address}[/bold]"
                      f"{' (TLS)' if tls else ''} (metadata `application`: generation, admin, segmentation; "
                      "precompute and cache_index are internal)")
        if tls:
            console.print(f"Ray's plaintext gRPC port: {platform.serve_grpc_port} on every interface (internal: keep "
                          "it closed to the outside)")
        console.print(f"metrics: http://{platform.metrics_address}/metrics   index: {config.database}   "
                      f"KV store: {config.object_store}")
        console.print(_auth_notice(config, state_dir))
        console.print("Press Ctrl-C to stop.")
        if ready_file is not None:
            ready_file.write_text(json.dumps({"grpc": platform.grpc_address, "metrics": platform.metrics_address,
                                              "tls": tls is not None}))
        platform.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if ready_file is not None:  # first: whoever waits on it stops sending here
            ready_file.unlink(missing_ok=True)
        if started:
            _drain(platform, grace_period)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        console.print("Shutting down...")
        platform.stop()
        console.print("Stopped.")


def _drain(platform, grace_s: float) -> None:
    """New calls get UNAVAILABLE; those in flight have ``grace_s`` to finish. A second Ctrl-C or
    SIGTERM stops at once."""
    console.print(f"Draining: new requests get UNAVAILABLE; requests in flight have {grace_s:g} s to finish...")
    try:
        left = platform.drain(grace_s)
    except KeyboardInterrupt:
        console.print("Interrupted again: stopping without waiting.")
        return
    if left:
        console.print(f"[yellow]{left} request(s) still in flight after {grace_s:g} s: stopping them.[/yellow]")
    else:
        console.print("No request in flight.")
