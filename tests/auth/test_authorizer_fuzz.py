"""The Authorizer against random metadata (issue 14, item 7), authentication on, over a real
SQLite key store: every call is admitted with the right principal or refused with
AuthenticationError / PermissionDeniedError, never another exception, and a refusal never
shows the secret it was sent. (The running platform is fuzzed without authentication in
tests/fuzz; this covers the keys on every method.)"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from blockrag.auth import Authorizer, KeyStore, Principal, Role
from blockrag.errors import AuthenticationError, PermissionDeniedError
from blockrag.kvcache.index import open_index_engine

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    engine = open_index_engine(f"sqlite:///{tmp_path_factory.mktemp('keys')}/index.db")
    store = KeyStore(engine)
    keys = {role: store.create("acme", role)[1].text for role in Role}
    revoked, revoked_key = store.create("acme", Role.ADMIN)
    store.revoke(revoked.key_id)
    yield store, keys, revoked_key.text
    engine.dispose()


def _mutations(key: str) -> st.SearchStrategy[str]:
    """The key with one character changed, cut short, or with text added."""
    return st.one_of(
        st.builds(lambda i, c: key[:i % len(key)] + c + key[i % len(key) + 1:], st.integers(0, 200),
                  st.characters(min_codepoint=0x21, max_codepoint=0x7E)),
        st.integers(0, len(key) - 1).map(lambda i: key[:i]),
        PRINTABLE.map(lambda s: key + s))


@given(data=st.data())
@FUZZ
def test_random_metadata_is_admitted_or_refused_cleanly(store, data):
    store, keys, revoked = store
    key = data.draw(st.one_of(st.sampled_from([*keys.values(), revoked]),
                              st.sampled_from(list(keys.values())).flatmap(_mutations), PRINTABLE))
    value = data.draw(st.one_of(st.just(f"Bearer {key}"), st.sampled_from(["bearer ", "BEARER  ", "Basic ", ""]).map(
        lambda scheme: f"{scheme}{key}"), st.builds(lambda s: f"Bearer {key}".encode() + s, st.binary(max_size=8))))
    others = data.draw(st.lists(st.tuples(st.sampled_from(["application", "x-other", "authorization-x"]), PRINTABLE),
                                max_size=3))
    metadata = [*others, (data.draw(st.sampled_from(["authorization", "Authorization"])), value)]
    needed, internal = data.draw(st.sampled_from(list(Role))), data.draw(st.booleans())

    authorizer = Authorizer(lambda: store, required=True)
    try:
        principal = authorizer.admit(metadata, needed, "Method", internal=internal)
    except (AuthenticationError, PermissionDeniedError) as e:
        event(type(e).__name__)
        secret = key.rsplit("_", 1)[-1]
        assert len(secret) < 8 or secret not in str(e), str(e)
        return
    event("admitted")  # only for an exact, active key whose role allows the call
    assert isinstance(principal, Principal) and key in keys.values()
    role = next(r for r, k in keys.items() if k == key)
    assert principal.role is role and principal.tenant == "acme"
    assert role is Role.ADMIN if internal else role >= needed
