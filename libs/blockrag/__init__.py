"""BlockRAG: retrieval-augmented generation served with block attention."""

__version__ = "0.1.0"
