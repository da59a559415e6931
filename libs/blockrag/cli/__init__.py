"""The `blockrag` command line."""

import os

# gRPC's core logs at INFO since it moved to absl (a failed TLS handshake prints its own line before
# ours); grpc's documented default is ERROR. Read once, when grpc is imported: so here, before any
# CLI module imports it. An explicit GRPC_VERBOSITY (debugging) wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
