"""Library log lines in a replica's Serve log."""

from __future__ import annotations

import logging


def replica_logs() -> None:
    """blockrag's INFO lines (model versions loaded, tenants switched, warming progress) into
    this replica's log, next to Serve's own: Serve gives handlers to its logger only."""
    ours = logging.getLogger("blockrag")
    ours.setLevel(logging.INFO)
    for handler in logging.getLogger("ray.serve").handlers:
        if handler not in ours.handlers:
            ours.addHandler(handler)
