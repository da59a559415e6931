"""The status Serve's gRPC proxy gives a call whose replica died: UNAVAILABLE, not INTERNAL.

A call in flight when its replica's process dies (killed, out of memory, its node lost) fails in
the proxy with RayActorError. Ray Serve 2.60's proxy maps every error it has no rule for to
INTERNAL with the error's text as the details (ray/serve/_private/grpc_util.py,
get_grpc_response_status): a status clients do not retry, and details with the actor's id, pid
and address. Serve has no hook for the proxy's status (gRPCOptions takes a port and servicer
functions; the server it builds takes no interceptors), so this module replaces the function
the proxy calls, in the proxy's own process: ray.serve._private.proxy.get_grpc_response_status,
which proxy.py imports by name and calls for the unary, server-streaming and client-streaming
paths. A dead replica becomes UNAVAILABLE with a short message; every other error keeps Ray's
mapping.

This depends on Ray's internals, so it is pinned: `check` (at platform start, in the driver) and
`install` (in the proxy, from the servicer functions of grpc_options) refuse a Ray version other
than TESTED_RAY, or a proxy lacking the function with the parameters it had. After upgrading Ray:
read proxy.py's callers of get_grpc_response_status, run
    .venv/bin/python -m pytest tests/faults/test_platform_faults.py -k replica
then update TESTED_RAY.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable

from blockrag.errors import PlatformStartError

log = logging.getLogger("blockrag.services.proxy_status")

TESTED_RAY = "2.60."  # the Ray minor version whose proxy this was written and tested against
PARAMETERS = ("exc", "request_timeout_s", "request_id")
DEAD_REPLICA = "the replica serving this call stopped before it finished; retry the call"


def check() -> Callable:
    """Ray's function the proxy calls for an error's status; PlatformStartError where Ray is not
    the version this module was tested on, or the function is absent or takes other parameters."""
    import ray
    from ray.serve._private import proxy

    where = "ray.serve._private.proxy.get_grpc_response_status"
    if not ray.__version__.startswith(TESTED_RAY):
        raise PlatformStartError(
            f"Ray {ray.__version__} is installed, but the gRPC proxy's status for a dead replica is "
            f"patched for Ray {TESTED_RAY}x only ({where}): see blockrag_services/proxy_status.py")
    original = getattr(proxy, "get_grpc_response_status", None)
    original = getattr(original, "blockrag_original", original)  # installed already
    if original is None or tuple(inspect.signature(original).parameters) != PARAMETERS:
        raise PlatformStartError(
            f"Ray {ray.__version__}'s gRPC proxy has no {where}{PARAMETERS}, which "
            f"blockrag_services/proxy_status.py replaces: a dead replica's calls would get INTERNAL")
    return original


def install() -> None:
    """Replace the proxy's status function in this process (the proxy's); once per process."""
    from ray.serve._private import proxy

    if hasattr(proxy.get_grpc_response_status, "blockrag_original"):
        return
    original = check()

    def get_grpc_response_status(exc, request_timeout_s, request_id):
        if dead_replica(exc):
            # the actor's id, pid and address stay in the proxy's log
            log.warning("request %s: its replica stopped: %s", request_id, exc)
            return _unavailable()
        return original(exc, request_timeout_s, request_id)

    get_grpc_response_status.blockrag_original = original
    proxy.get_grpc_response_status = get_grpc_response_status


def dead_replica(exc: BaseException) -> bool:
    """The replica's actor died or became unreachable (not an error its code raised: a
    RayTaskError, whose class also subclasses its cause's)."""
    from ray.exceptions import RayActorError, RayTaskError

    return isinstance(exc, RayActorError) and not isinstance(exc, RayTaskError)


def _unavailable():
    import grpc
    from ray.serve._private.proxy_request_response import ResponseStatus

    return ResponseStatus(code=grpc.StatusCode.UNAVAILABLE, is_error=True, message=DEAD_REPLICA)
