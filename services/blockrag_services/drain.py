"""Draining: how the platform stops without cutting the answers it is streaming.

On SIGTERM (`blockrag up`: Kubernetes, CI, kill) the platform
  1. removes its ready file (the CLI), so that whoever waits on it stops sending here;
  2. marks itself draining: a file whose path every process of the platform has in
     $BLOCKRAG_DRAIN_FILE (set before Ray starts its workers, which inherit it). From then on a
     call arriving from the gRPC port is refused with UNAVAILABLE (errors._admit: retry on another
     instance) and grpc.health reports NOT_SERVING; calls between deployments, which belong to
     requests already admitted, go on;
  3. waits until no Serve replica has a request in flight, at most a grace period;
  4. shuts Serve and Ray down.
A stat per admitted call is the whole cost while running.

Outside `blockrag up` (a Kubernetes pod of a KubeRay cluster: `ray start --block`, nothing of ours
in the foreground) `blockrag drain` does steps 2 and 3 for the pod's own Ray node, as the pod's
preStop hook: the container's environment must set $BLOCKRAG_DRAIN_FILE (Ray's workers on the
node inherit it), and terminationGracePeriodSeconds must exceed the hook's grace period, as
the kubelet sends SIGTERM (Ray stops, streams are cut) when the hook returns or the period ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from blockrag.errors import ServiceUnavailableError

DRAIN_ENV = "BLOCKRAG_DRAIN_FILE"
DEFAULT_GRACE_S = 20.0  # under Kubernetes' default terminationGracePeriodSeconds (30)
POLL_S = 0.2


def draining() -> bool:
    """Whether this process's platform is shutting down (never, outside a platform that set it)."""
    path = os.environ.get(DRAIN_ENV)
    return bool(path) and os.path.exists(path)


def refuse_if_draining() -> None:
    if draining():
        raise ServiceUnavailableError("the platform is shutting down and takes no new requests; "
                                      "retry on another instance or after it restarts")


def mark_draining(path: Path) -> None:
    """From now on every process of the platform refuses new calls from the port."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def requests_in_flight(node_id: str | None = None) -> int:
    """Requests (from the port or between deployments) the Serve replicas are handling now;
    ``node_id``: those of the replicas on that Ray node only (a pod's own), else all.

    Asks each replica actor (Serve names them SERVE_REPLICA::...) on the method Serve's own
    routers use, which runs outside the replica's request loop; a replica that does not answer
    within 2 s counts as one request in flight (busy, or failing: the grace period bounds the wait)."""
    import ray

    replicas = list(serve_replicas(node_id).values())
    counts = [r.get_num_ongoing_requests.remote() for r in replicas]
    ready, silent = ray.wait(counts, num_returns=len(counts), timeout=2.0)
    return sum(ray.get(ready)) + len(silent)


def serve_replicas(node_id: str | None = None) -> dict:
    """The Serve replica actors by name; with ``node_id``, those on that node (asked of each
    replica: a replica that does not say within 2 s is kept, as it may be this node's)."""
    import ray
    from ray.serve._private.common import REPLICA_ID_FULL_ID_STR_PREFIX
    from ray.util import list_named_actors

    replicas = {a["name"]: ray.get_actor(a["name"], namespace=a["namespace"])
                for a in list_named_actors(all_namespaces=True) if a["name"].startswith(REPLICA_ID_FULL_ID_STR_PREFIX)}
    if node_id is None:
        return replicas
    facts = replica_facts(replicas)
    return {name: r for name, r in replicas.items() if name not in facts or facts[name][0] == node_id}


def replica_facts(replicas: dict) -> dict[str, tuple[str, str | None]]:
    """name -> (Ray node id, $BLOCKRAG_DRAIN_FILE) of each replica that answers within 2 s."""
    import ray

    refs = {r.__ray_call__.remote(_facts): name for name, r in replicas.items()}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=2.0)
    return {refs[ref]: ray.get(ref) for ref in ready}


def _facts(_actor) -> tuple[str, str | None]:
    """Run inside a replica (Ray's __ray_call__): its node and the drain file it watches."""
    import ray

    return ray.get_runtime_context().get_node_id(), os.environ.get(DRAIN_ENV)


def wait_idle(grace_s: float, *, poll_s: float = POLL_S, node_id: str | None = None) -> int:
    """Until no request is in flight (on ``node_id``'s replicas, or all), at most ``grace_s``;
    the requests still in flight then."""
    deadline = time.monotonic() + grace_s
    while True:
        left = requests_in_flight() if node_id is None else requests_in_flight(node_id)
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.0)))
