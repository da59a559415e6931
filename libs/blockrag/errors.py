"""Typed errors of the library. Services map them to gRPC status codes; the CLI to messages."""


class BlockRAGError(Exception):
    """Base of every error the library raises on purpose."""


class UnsupportedModelError(BlockRAGError):
    """The model cannot run under block attention (no rotary positions, unknown layout...)."""


class ModelLoadError(BlockRAGError):
    """A model could not be found, converted or loaded."""


class EngineCorrectnessError(BlockRAGError):
    """The cached-block path disagrees with the masked reference: the model must not be served."""


class InvalidRequestError(BlockRAGError, ValueError):
    """A request is malformed: empty prompt, out-of-range token ids, bad sampling settings."""


class InvalidBlockError(InvalidRequestError):
    """A block is malformed or does not fit the model (empty, wrong shape, other geometry)."""


class KVCodecError(BlockRAGError):
    """Serialized KV bytes are malformed: truncated, tampered with, or of an unknown format."""


class KVIntegrityError(KVCodecError):
    """The payload's SHA-256 does not match the one in its header (tampered or truncated)."""


class KVFingerprintMismatchError(KVCodecError):
    """The entry was encoded for another model (or revision) than the one asking for it."""


class NotFoundError(BlockRAGError):
    """A named thing (block id, collection, model version) does not exist."""


class ConflictError(BlockRAGError):
    """The request does not fit the current state: a distillation run is already going, or a
    model version or run is not in a state that allows this. Services answer
    FAILED_PRECONDITION."""


class LimitExceededError(InvalidRequestError):
    """A request is larger than a configured limit (blocks, tokens, bytes)."""


class QuotaExceededError(BlockRAGError):
    """A tenant's quota (stored KV bytes, precompute tokens per minute) does not allow the
    request; nothing was computed or written for it. Services answer RESOURCE_EXHAUSTED."""


class ServiceUnavailableError(BlockRAGError):
    """A dependency is not ready or failing: model not loaded, store unreachable. Retry later."""


class StorageConfigError(BlockRAGError, ValueError):
    """A storage URL or config is unusable: unknown scheme, missing credentials, bad bucket name,
    or a location that belongs to another store than the one asked to read it."""


class ObjectStoreError(ServiceUnavailableError):
    """The object store failed: S3 unreachable, credentials refused, bucket missing, disk I/O."""


class CacheIndexError(ServiceUnavailableError):
    """The cache index database failed: unreachable, locked for too long, or schema mismatch."""


class PlatformStartError(BlockRAGError):
    """The local platform could not start: a port is taken, Ray or a service failed to come up."""


class AuthenticationError(BlockRAGError):
    """No API key where one is required, or a key that is malformed, unknown or revoked.
    Services answer UNAUTHENTICATED."""


class PermissionDeniedError(BlockRAGError):
    """A valid API key whose role or tenant does not allow the call, or an internal service
    called from outside without an admin key. Services answer PERMISSION_DENIED."""
