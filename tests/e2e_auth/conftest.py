"""One platform with authentication on for this package, started as an operator starts it: the
first admin key from `blockrag keys bootstrap` on an empty state directory, then
`blockrag up --auth`. Before it starts, the isolation suite's tenant keys are made on its index
database (tests/e2e_auth/test_tenant_isolation.py). Each module keeps to tenants of its own."""

from __future__ import annotations

import time

import pytest
from e2e_auth.auth_cli import ADMIN_TENANT, cli
from fixtures.platform import start_platform, stop_platform

from blockrag.auth import KeyStore, Role
from blockrag.kvcache.index import open_index_engine

# name -> (tenant, role): the isolation suite's tenant A ("acme") and B ("globex")
TENANT_KEYS = {"a_writer": ("acme", Role.WRITER), "a_reader": ("acme", Role.READER),
               "b_reader": ("globex", Role.READER), "b_writer": ("globex", Role.WRITER)}


@pytest.fixture(scope="package")
def auth_platform(tmp_path_factory):
    """The running platform; ``.bootstrap`` the bootstrap's CompletedProcess, ``.keys`` name ->
    key ("admin": the bootstrap's, and TENANT_KEYS), ``.started`` when it began to start."""
    state = tmp_path_factory.mktemp("auth-platform")
    boot = cli("blockrag", "keys", "bootstrap", "--state-dir", str(state), "--tenant", ADMIN_TENANT)
    assert boot.returncode == 0, boot.stderr
    keys = {"admin": boot.stdout.strip().splitlines()[-1]}
    engine = open_index_engine(f"sqlite:///{state / 'index.db'}")
    try:
        store = KeyStore(engine)
        keys.update({name: store.create(tenant, role, name)[1].text for name, (tenant, role) in TENANT_KEYS.items()})
    finally:
        engine.dispose()
    began = time.monotonic()
    running = start_platform(state, "--auth")
    running.started, running.keys, running.bootstrap = began, keys, boot
    yield running
    code = stop_platform(running)
    assert code == 0, f"`blockrag up` did not stop cleanly (exit {code}):\n{running.log_tail()}"
