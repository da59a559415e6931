"""`blockrag drain`: stop taking new calls on this Ray node and wait for those in flight; for a
Kubernetes preStop hook on a pod of a KubeRay cluster (blockrag_services.drain says what it does
and what the pod needs). `blockrag up` drains itself on SIGTERM and needs none of this."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from blockrag.errors import InvalidRequestError
from blockrag_services.drain import DEFAULT_GRACE_S, DRAIN_ENV  # light: no Ray, no torch

console = Console()


def drain(
    grace_period: Annotated[float, typer.Option(min=0, help="Seconds the requests in flight have to finish; keep it under the pod's terminationGracePeriodSeconds.")] = DEFAULT_GRACE_S,
    drain_file: Annotated[Path | None, typer.Option(help=f"The drain file the platform's processes watch; default: ${DRAIN_ENV}.")] = None,
    ray_address: Annotated[str, typer.Option(help="The Ray cluster to join (auto: the one this node runs).")] = "auto",
    all_nodes: Annotated[bool, typer.Option(help="Wait for the replicas of every node, not only this one's.")] = False,
) -> None:
    """Mark this node draining (its gRPC proxy's health says NOT_SERVING, its replicas refuse new
    calls from the port with UNAVAILABLE; calls of requests already admitted go on), then wait until
    this node's Serve replicas have no request in flight, at most --grace-period. Exits 0 either
    way, saying how many requests were still in flight."""
    path = drain_file or (Path(os.environ[DRAIN_ENV]) if os.environ.get(DRAIN_ENV) else None)
    if path is None:
        raise InvalidRequestError(f"no drain file: pass --drain-file, or set ${DRAIN_ENV} to the path the "
                                  f"platform's processes have in ${DRAIN_ENV} (the pod's environment)")
    import ray

    from blockrag_services.drain import mark_draining, replica_facts, serve_replicas, wait_idle

    ray.init(address=ray_address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    try:
        node = None if all_nodes else ray.get_runtime_context().get_node_id()
        # replicas watching another file (or none) would take new calls all through the drain
        facts = replica_facts(serve_replicas(node))
        others = sorted({f for _, f in facts.values() if f != str(path)}, key=str)
        if others:
            raise InvalidRequestError(f"{sum(f != str(path) for _, f in facts.values())} replica(s) here watch "
                                      f"{', '.join(repr(f) for f in others)}, not {str(path)!r}: set ${DRAIN_ENV} to "
                                      f"one path in the environment Ray starts with, and drain that")
        mark_draining(path)
        console.print(f"Draining {'every node' if node is None else 'this node'} ({len(facts)} replica(s)): new "
                      f"requests get UNAVAILABLE; requests in flight have {grace_period:g} s to finish...")
        left = wait_idle(grace_period, poll_s=0.5, node_id=node)
    finally:
        ray.shutdown()
    if left:
        console.print(f"[yellow]{left} request(s) still in flight after {grace_period:g} s.[/yellow]")
    else:
        console.print("No request in flight.")
