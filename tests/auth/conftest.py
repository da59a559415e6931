"""The KeyStore the key tests share: on SQLite and PostgreSQL (fixtures.index_db's `url`), its
api_keys table emptied first, with the fixtures' clock."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from blockrag.auth import KeyStore
from blockrag.kvcache.index import open_index_engine
from blockrag.kvcache.index_schema import api_keys


@pytest.fixture
def store(url: str, clock):
    engine = open_index_engine(url)
    with engine.begin() as conn:  # the PostgreSQL database is shared by the session's tests
        conn.execute(sa.delete(api_keys))
    yield KeyStore(engine, clock=clock)
    engine.dispose()
