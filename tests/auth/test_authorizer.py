"""Authorizer, Principal and bearer parsing without a server: who may call what, and which
tenant a call acts for. The decisions the gRPC tests (tests/services/test_access.py) see through
real calls."""

from __future__ import annotations

import pytest

from blockrag.auth import Authorizer, KeyStore, Principal, Role, bearer_token
from blockrag.errors import AuthenticationError, PermissionDeniedError
from blockrag.kvcache.index import open_index_engine


@pytest.fixture
def keys(tmp_path):
    engine = open_index_engine(f"sqlite:///{tmp_path}/index.db")
    store = KeyStore(engine)
    yield {role: store.create("acme", role)[1].text for role in Role} | {"store": store}
    engine.dispose()


def bearer(key: str) -> list[tuple[str, str]]:
    return [("application", "generation"), ("authorization", f"Bearer {key}")]


def test_bearer_token() -> None:
    assert bearer_token([("application", "x")]) is None
    assert bearer_token([("Authorization", "bearer  brk_x ")]) == "brk_x"
    assert bearer_token([("authorization", b"Bearer brk_y")]) == "brk_y"
    for value in ("Basic dXNlcjpwdw==", "Bearer ", "brk_x"):
        with pytest.raises(AuthenticationError, match="must be `Bearer <key>`"):
            bearer_token([("authorization", value)])


# (role needed, internal) -> roles allowed
MATRIX = {
    (Role.READER, False): {Role.READER, Role.WRITER, Role.ADMIN},  # Generate, Segment
    (Role.WRITER, False): {Role.WRITER, Role.ADMIN},  # Ingest
    (Role.ADMIN, False): {Role.ADMIN},  # AdminService
    (Role.ADMIN, True): {Role.ADMIN},  # cache index, precompute
}


@pytest.mark.parametrize("needed, internal", MATRIX)
def test_role_matrix_with_auth_on(keys, needed: Role, internal: bool) -> None:
    authorizer = Authorizer(lambda: keys["store"], required=True)
    for role in Role:
        if role in MATRIX[needed, internal]:
            assert authorizer.admit(bearer(keys[role]), needed, "M", internal=internal).role is role
        else:
            with pytest.raises(PermissionDeniedError, match=f"needs the {needed.label} role; this API key has "
                                                            f"the {role.label} role"):
                authorizer.admit(bearer(keys[role]), needed, "M", internal=internal)


def test_without_a_key() -> None:
    opened = []
    on = Authorizer(lambda: opened.append(1), required=True)
    with pytest.raises(AuthenticationError, match="requires an API key: send gRPC metadata `authorization: Bearer"):
        on.admit([], Role.READER, "Generate")
    off = Authorizer(lambda: opened.append(1), required=False)
    assert off.admit([], Role.WRITER, "Ingest") is None  # open platform: public methods need no key
    for authorizer in (on, off):  # internal methods never without an admin key
        with pytest.raises(PermissionDeniedError, match="GetBlocks is internal"):
            authorizer.admit([], Role.ADMIN, "GetBlocks", internal=True)
    assert opened == []  # no database connection for any of that


def test_internal_methods_need_an_admin_key_with_auth_off(keys) -> None:
    off = Authorizer(lambda: keys["store"], required=False)
    assert off.admit(bearer(keys[Role.ADMIN]), Role.ADMIN, "Lookup", internal=True).role is Role.ADMIN
    with pytest.raises(PermissionDeniedError):
        off.admit(bearer(keys[Role.WRITER]), Role.ADMIN, "Lookup", internal=True)
    with pytest.raises(AuthenticationError, match="malformed"):
        off.admit(bearer("brk_forged"), Role.ADMIN, "Lookup", internal=True)


def test_the_tenant_is_the_keys() -> None:
    acme = Principal("key_0", "acme", Role.READER)
    assert acme.tenant_for("") == acme.tenant_for("acme") == "acme"
    with pytest.raises(PermissionDeniedError, match="belongs to tenant 'acme' and cannot act for tenant 'globex'"):
        acme.tenant_for("globex")
    with pytest.raises(PermissionDeniedError):
        acme.tenant_for("default")
    default = Principal("key_1", "default", Role.ADMIN)
    assert default.tenant_for("") == default.tenant_for("default") == "default"
    with pytest.raises(PermissionDeniedError):  # admin keys too: the data plane is per tenant
        default.tenant_for("acme")
