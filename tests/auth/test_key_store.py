"""KeyStore on SQLite and PostgreSQL: the life of a key (create, verify, revoke), the first
admin key, and what the database holds: the hash of a key, never the key."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from blockrag.auth import ApiKey, KeyStore, Principal, Role
from blockrag.errors import AuthenticationError, ConflictError, InvalidRequestError, NotFoundError
from blockrag.kvcache.index_schema import api_keys


def test_create_verify_revoke(store: KeyStore, clock) -> None:
    record, key = store.create("acme", Role.WRITER, "ingest job")
    assert key.text.startswith("brk_") and key.key_id == record.key_id and record.active
    assert (record.tenant, record.role, record.label, record.created_at) == ("acme", Role.WRITER, "ingest job", clock.now)
    assert store.verify(key.text) == Principal(record.key_id, "acme", Role.WRITER)
    assert store.verify(f"  {key.text}\n") == Principal(record.key_id, "acme", Role.WRITER)

    clock.tick()
    revoked = store.revoke(record.key_id)
    assert revoked.revoked_at == clock.now and not revoked.active
    with pytest.raises(AuthenticationError, match="unknown or revoked"):
        store.verify(key.text)
    clock.tick()
    assert store.revoke(record.key_id).revoked_at == revoked.revoked_at  # again: unchanged
    assert [k.key_id for k in store.list() if not k.active] == [record.key_id]


def test_a_wrong_secret_an_unknown_id_or_a_malformed_key_is_refused(store: KeyStore) -> None:
    record, key = store.create("acme", Role.ADMIN)
    other = ApiKey.generate()
    forged = key.text[: -len(other.text.split("_", 2)[2])] + other.text.split("_", 2)[2]  # right id, wrong secret
    assert forged != key.text and ApiKey.parse(forged).key_id == record.key_id
    for text in (forged, other.text):
        with pytest.raises(AuthenticationError, match="unknown or revoked"):
            store.verify(text)
    for text in ("", "brk_", "Bearer " + key.text, key.text + "x", key.text.replace("brk_", "xyz_")):
        with pytest.raises(AuthenticationError, match="malformed") as failed:
            store.verify(text)
        assert key.text not in str(failed.value)  # never echoed


def test_the_database_holds_the_hash_not_the_key(store: KeyStore, url: str) -> None:
    keys = [store.create(t, r)[1] for t, r in [("acme", Role.READER), ("globex", Role.ADMIN)]]
    with store._engine.connect() as conn:
        rows = [tuple(str(v) for v in row) for row in conn.execute(sa.select(api_keys))]
    stored = " ".join(" ".join(row) for row in rows)
    for key in keys:
        secret = key.text.split("_", 2)[2]
        assert key.text not in stored and secret not in stored
        assert key.digest in stored and len(key.digest) == 64
    if url.startswith("sqlite"):  # and not anywhere in the file either (free pages, WAL)
        path = url.removeprefix("sqlite:///")
        raw = b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))
        assert not any(k.text.split("_", 2)[2].encode() in raw for k in keys)
    assert repr(keys[0]) == f"ApiKey({keys[0].key_id!r})"  # no secret in logs or tracebacks


def test_list_and_tenants(store: KeyStore, clock) -> None:
    a, _ = store.create("acme", Role.READER)
    clock.tick()
    d, _ = store.create("", Role.WRITER)  # "" is the default tenant, as in the index
    assert d.tenant == "default"
    assert [k.key_id for k in store.list()] == [a.key_id, d.key_id]
    assert [k.key_id for k in store.list("acme")] == [a.key_id]
    assert [k.key_id for k in store.list("")] == [d.key_id]
    with pytest.raises(NotFoundError, match="unknown API key id 'key_nope'"):
        store.revoke("key_nope")
    with pytest.raises(InvalidRequestError, match="unknown role 'owner'"):
        Role.parse("owner")
    with pytest.raises(InvalidRequestError, match="tenant must be"):
        store.create("x" * 300, Role.READER)


def test_first_admin_key_once_unless_forced(store: KeyStore) -> None:
    store.create("acme", Role.WRITER)  # not an admin: does not count
    first, key = store.create_first_admin("ops")
    assert store.verify(key.text).role is Role.ADMIN and store.admins() == [first]
    with pytest.raises(ConflictError, match=f"an admin key exists already \\({first.key_id}\\)"):
        store.create_first_admin("ops")
    second, _ = store.create_first_admin("ops", force=True)  # every admin key lost
    store.revoke(first.key_id)
    assert store.admins() == [second]
