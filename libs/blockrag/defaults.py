"""The platform's defaults that more than one place needs: its ports, where it listens, where a
client looks for it, and the cache maintenance interval the CLI shows.

Each is stated here once. The code imports it (the platform, the CLIs, the client, the metrics
exporter, the config schema); the YAML files that must restate one (deploy/serve/*.yaml, the Helm
chart) are compared with it by tests/deploy/test_deploy_defaults.py. A setting used by one schema
only keeps its default in that schema (services/blockrag_services/config.py).

Light on purpose: the CLIs import it at start, so it imports nothing.
"""

from __future__ import annotations

from typing import Final

# Every service behind Ray Serve's gRPC proxy, on one port: not Serve's default 9000, which MinIO
# also takes.
GRPC_PORT: Final[int] = 50051
# Serve's HTTP proxy, unused by the platform: kept off Serve's default 8000, which many tools take.
HTTP_PORT: Final[int] = 8300
# The per-node Prometheus exporter (blockrag.telemetry.exporter): OpenTelemetry's Prometheus port.
METRICS_PORT: Final[int] = 9464

# `blockrag up` listens on loopback unless told otherwise (authentication is off by default).
LOCAL_HOST: Final[str] = "127.0.0.1"
# `blockrag metrics serve` runs in a pod whose exporter Prometheus scrapes from outside.
METRICS_SERVE_HOST: Final[str] = "0.0.0.0"

# Where a client looks for the platform when given no address and $BLOCKRAG_ADDRESS is unset.
ADDRESS_ENV: Final[str] = "BLOCKRAG_ADDRESS"
ADDRESS: Final[str] = f"{LOCAL_HOST}:{GRPC_PORT}"

# Seconds between the Admin replica's cache maintenance passes (eviction + orphan sweep); 0: off.
CACHE_MAINTENANCE_INTERVAL_S: Final[float] = 300.0
