"""gRPC client of the platform: what the CLIs use, and an example for other clients."""

from blockrag.client.client import DEFAULT_ADDRESS, BlockRAGClient, PlatformError
from blockrag.client.tls import TLSConfig

__all__ = ["DEFAULT_ADDRESS", "BlockRAGClient", "PlatformError", "TLSConfig"]
