"""KeyStore: API keys in the index database (table api_keys, migration 0004).

Keys are created with a tenant and a role, verified on every authenticated call (one primary-key
read: a revoked key fails at its next call, there is no cache to outlive it), and revoked by id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from blockrag.auth.api_key import ApiKey
from blockrag.auth.principal import DEFAULT_TENANT, Principal
from blockrag.auth.role import Role
from blockrag.errors import AuthenticationError, ConflictError
from blockrag.kvcache.index import transaction
from blockrag.kvcache.index_schema import api_keys
from blockrag.registry import _database as d

_K = api_keys.c
_BAD_KEY = ("the API key is unknown or revoked; ask an admin for a valid key "
            "(blockrag-admin keys list shows which exist)")


@dataclass(frozen=True)
class KeyRecord:
    """A row of api_keys: everything but the hash."""

    key_id: str
    tenant: str
    role: Role
    label: str
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyStore:
    """API keys over a migrated index engine (``open_index_engine``); the store does not own it."""

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time):
        self._engine = engine
        self._clock = clock

    def create(self, tenant: str, role: Role, label: str = "", *, key: ApiKey | None = None) -> tuple[KeyRecord, ApiKey]:
        """A new key; the returned ApiKey's text is the only copy of the secret. ``key``: store
        this one instead of a generated one (its id must be new)."""
        key = key or ApiKey.generate()
        row = dict(key_id=key.key_id, tenant=_tenant(tenant), role=Role(role).label, secret_hash=key.digest,
                   label=d.text(label, "label", empty=True)[:255], created_at=self._clock(), revoked_at=None)
        with transaction(self._engine, "create API key", write=True) as conn:
            conn.execute(sa.insert(api_keys), row)
        return _record(row), key

    def create_first_admin(self, tenant: str, label: str = "bootstrap", *, force: bool = False) -> tuple[KeyRecord, ApiKey]:
        """An admin key when no active admin key exists (ConflictError otherwise, unless
        ``force``: the way back in when every admin key is lost)."""
        self._no_admin_unless(force)
        return self.create(tenant, Role.ADMIN, label)

    def import_first_admin(self, key: ApiKey, tenant: str, label: str = "bootstrap", *,
                           force: bool = False) -> tuple[KeyRecord, bool]:
        """``create_first_admin`` with a key made elsewhere (e.g. kept in a Kubernetes Secret), and
        whether it was stored now. When that very key is stored already nothing changes and its
        record comes back with False, revoked or not (a revoked key stays revoked), so a hook that
        runs at every upgrade is harmless. Its id stored with another secret: ConflictError."""
        stored = self._stored(key)
        if stored is not None:
            return stored, False
        self._no_admin_unless(force)
        return self.create(tenant, Role.ADMIN, label, key=key)[0], True

    def _no_admin_unless(self, force: bool) -> None:
        admins = self.admins()
        if admins and not force:
            raise ConflictError(
                f"an admin key exists already ({admins[0].key_id}): create further keys with "
                f"`blockrag-admin --api-key <admin key> keys create`, or pass --force if every admin key is lost")

    def _stored(self, key: ApiKey) -> KeyRecord | None:
        """The record of ``key`` when stored (None when its id is unknown); ConflictError when its
        id is stored with another secret."""
        with transaction(self._engine, "read API key") as conn:
            row = conn.execute(sa.select(api_keys).where(_K.key_id == key.key_id)).one_or_none()
        if row is None:
            return None
        if not key.matches(row.secret_hash):
            raise ConflictError(f"another key with id {key.key_id} is stored: this key cannot be imported")
        return _record(row._asdict())

    def admins(self) -> list[KeyRecord]:
        """The active admin keys."""
        return [k for k in self.list() if k.active and k.role is Role.ADMIN]

    def list(self, tenant: str | None = None) -> list[KeyRecord]:
        """Every key (revoked ones too), oldest first; one tenant's when given."""
        query = sa.select(api_keys).order_by(_K.created_at, _K.key_id)
        if tenant is not None:
            query = query.where(_K.tenant == _tenant(tenant))
        with transaction(self._engine, "list API keys") as conn:
            return [_record(r._asdict()) for r in conn.execute(query)]

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key (NotFoundError if unknown); revoking it again changes nothing."""
        with transaction(self._engine, "revoke API key", write=True) as conn:
            row = d.get_row(conn, _K.key_id, key_id, f"unknown API key id {key_id!r} (blockrag-admin keys list)",
                            lock=True)._asdict()
            if row["revoked_at"] is None:
                row["revoked_at"] = self._clock()
                conn.execute(sa.update(api_keys).where(_K.key_id == key_id).values(revoked_at=row["revoked_at"]))
        return _record(row)

    def verify(self, text: str) -> Principal:
        """The principal of an active key; AuthenticationError for any other text."""
        key = ApiKey.parse(text)
        with transaction(self._engine, "verify API key") as conn:
            row = conn.execute(sa.select(_K.tenant, _K.role, _K.secret_hash, _K.revoked_at)
                               .where(_K.key_id == key.key_id)).one_or_none()
        if row is None or not key.matches(row.secret_hash) or row.revoked_at is not None:
            raise AuthenticationError(_BAD_KEY)
        return Principal(key.key_id, row.tenant, Role.parse(row.role))


def _tenant(tenant: str) -> str:
    return d.name(tenant or DEFAULT_TENANT, "tenant")


def _record(row: dict) -> KeyRecord:
    return KeyRecord(row["key_id"], row["tenant"], Role.parse(row["role"]), row["label"], row["created_at"],
                     row["revoked_at"])


__all__ = ["KeyRecord", "KeyStore"]
