"""KeyStore.import_first_admin on SQLite and PostgreSQL: a key made elsewhere (the Helm chart's
Secret) becomes the first admin key once; importing it again changes nothing."""

from __future__ import annotations

import pytest

from blockrag.auth import ApiKey, KeyStore, Principal, Role
from blockrag.errors import AuthenticationError, ConflictError


def test_an_imported_key_is_the_first_admin_once(store: KeyStore, clock) -> None:
    key = ApiKey.generate()
    record, created = store.import_first_admin(key, "ops", "helm")
    assert created and (record.key_id, record.tenant, record.role, record.label) == (key.key_id, "ops", Role.ADMIN, "helm")
    assert store.verify(key.text) == Principal(key.key_id, "ops", Role.ADMIN)

    clock.tick()
    again, created = store.import_first_admin(key, "other", "again")  # the hook at an upgrade
    assert not created and again == record
    assert [k.key_id for k in store.list()] == [key.key_id]

    store.revoke(key.key_id)
    revoked, created = store.import_first_admin(key, "ops")
    assert not created and not revoked.active  # a revoked key is not brought back
    with pytest.raises(AuthenticationError):
        store.verify(key.text)


def test_another_key_is_refused_while_an_admin_exists_unless_forced(store: KeyStore) -> None:
    store.create_first_admin("ops")
    other = ApiKey.generate()
    with pytest.raises(ConflictError, match="an admin key exists already"):
        store.import_first_admin(other, "ops")
    record, created = store.import_first_admin(other, "ops", force=True)
    assert created and store.verify(other.text).role is Role.ADMIN


def test_a_stored_id_with_another_secret_is_refused(store: KeyStore) -> None:
    key = ApiKey.generate()
    store.import_first_admin(key, "ops")
    forged = ApiKey.parse(key.text[:-1] + ("A" if key.text[-1] != "A" else "B"))  # same id, another secret
    assert forged.key_id == key.key_id
    with pytest.raises(ConflictError, match=f"another key with id {key.key_id}"):
        store.import_first_admin(forged, "ops", force=True)
