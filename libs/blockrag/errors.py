"""Typed errors of the library. Services map them to gRPC status codes; the CLI to messages."""


class BlockRAGError(Exception):
    """Base of every error the library raises on purpose."""


class UnsupportedModelError(BlockRAGError):
    """The model cannot run under block attention (no rotary positions, unknown layout...)."""


class ModelLoadError(BlockRAGError):
    """A model could not be found, converted or loaded."""


class EngineCorrectnessError(BlockRAGError):
    """The cached-block path disagrees with the masked reference: the model must not be served."""


class InvalidBlockError(BlockRAGError):
    """A block or a prompt is malformed (empty, wrong shape, from another model...)."""


class KVCodecError(BlockRAGError):
    """Serialized KV bytes are malformed: truncated, tampered with, or of an unknown format."""


class KVIntegrityError(KVCodecError):
    """The payload's SHA-256 does not match the one in its header (tampered or truncated)."""
