"""Authorizer: decides whether a call from outside the cluster may run, from its gRPC metadata.

Two kinds of methods:
- public ones (Generate, Ingest, Segment, AdminService): with authentication on, they need a
  valid key (UNAUTHENTICATED otherwise) whose role includes the method's (PERMISSION_DENIED
  otherwise); with it off, they are open and no key is read.
- internal ones (the cache index's and precompute's): the services call each other through Ray
  Serve handles, which carry no gRPC metadata and never reach this. From the gRPC port they need
  an admin key, whether authentication is on or not: the port must not expose the catalogue
  of every tenant's blocks to anyone who can reach it.

Calls through handles are trusted: they come from the platform's own code, which already
admitted the outside call that caused them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from blockrag.auth.key_store import KeyStore
from blockrag.auth.principal import Principal
from blockrag.auth.role import Role
from blockrag.errors import AuthenticationError, PermissionDeniedError

METADATA_KEY = "authorization"
_SCHEME = "bearer"
SEND_A_KEY = ("send gRPC metadata `authorization: Bearer <key>` (the CLIs: --api-key or $BLOCKRAG_API_KEY); "
              "an admin creates keys with `blockrag-admin keys create`")


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The key of an `authorization: Bearer <key>` entry; None without one; AuthenticationError
    for another scheme or an empty key."""
    for key, value in metadata:
        if key.lower() != METADATA_KEY:
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != _SCHEME or not token.strip():
            raise AuthenticationError(f"the authorization metadata must be `Bearer <key>`; {SEND_A_KEY}")
        return token.strip()
    return None


class Authorizer:
    def __init__(self, keys: Callable[[], KeyStore], required: bool):
        """keys: opens the key store on first use (a service that never checks a key never
        connects for it); required: authentication on for public methods."""
        self._open_keys = keys
        self._keys: KeyStore | None = None
        self.required = required

    @property
    def keys(self) -> KeyStore:
        if self._keys is None:
            self._keys = self._open_keys()
        return self._keys

    def admit(self, metadata: Iterable[tuple[str, str | bytes]], needed: Role, action: str, *,
              internal: bool = False) -> Principal | None:
        """The caller's principal, or None for an open platform's public method. Raises
        AuthenticationError (no, malformed, unknown or revoked key where one is needed) or
        PermissionDeniedError (a role that does not allow ``action``). Blocks on the database."""
        token = bearer_token(metadata)
        if internal:
            if token is None:
                raise PermissionDeniedError(
                    f"{action} is internal: the platform's services call it inside the cluster. From outside "
                    f"it needs an admin API key; RAG clients call the generation service (Ingest, Generate)")
            principal = self.keys.verify(token)
            principal.require(Role.ADMIN, action)
            return principal
        if not self.required:
            return None
        if token is None:
            raise AuthenticationError(f"this platform requires an API key: {SEND_A_KEY}")
        principal = self.keys.verify(token)
        principal.require(needed, action)
        return principal
