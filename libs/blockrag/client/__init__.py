"""gRPC client of the platform: what the CLIs use, and an example for other clients."""

from blockrag.client.client import DEFAULT_ADDRESS, BlockRAGClient, PlatformError

__all__ = ["DEFAULT_ADDRESS", "BlockRAGClient", "PlatformError"]
