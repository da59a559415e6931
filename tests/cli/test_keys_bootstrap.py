"""`blockrag keys bootstrap --key-file`, as the Helm chart's hook Job runs it at every install and
upgrade: the file's key becomes the first admin key once, a second run changes nothing, a file
that does not hold a key is refused without echoing it. On a SQLite index."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from blockrag.auth import ApiKey, KeyStore, Role
from blockrag.cli.app import app
from blockrag.errors import ConflictError, InvalidRequestError
from blockrag.kvcache.index import open_index_engine


@pytest.fixture
def database(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'index.db'}"


def bootstrap(database: str, *args: str):
    return CliRunner().invoke(app, ["keys", "bootstrap", "--database-url", database, *args])


def line(result) -> str:
    return " ".join(result.output.split())  # the console wraps long lines


def keys(database: str) -> list:
    engine = open_index_engine(database)
    try:
        return KeyStore(engine).list()
    finally:
        engine.dispose()


def test_the_files_key_is_stored_once_and_never_printed(database, tmp_path):
    key = ApiKey.generate()
    (tmp_path / "api-key").write_text(key.text + "\n")  # as a mounted Secret may end
    first = bootstrap(database, "--key-file", str(tmp_path / "api-key"), "--tenant", "ops", "--label", "helm")
    assert first.exit_code == 0, first.output
    assert f"Admin key {key.key_id} (tenant 'ops', role admin)" in line(first) and ": stored." in line(first)
    assert key.text not in first.output
    again = bootstrap(database, "--key-file", str(tmp_path / "api-key"))
    assert again.exit_code == 0 and line(again).endswith(": already stored."), again.output
    [record] = keys(database)
    assert (record.key_id, record.tenant, record.role, record.label) == (key.key_id, "ops", Role.ADMIN, "helm")


def test_a_file_without_a_key_is_refused_without_its_text(database, tmp_path):
    (tmp_path / "api-key").write_text("hunter2-not-a-key")
    result = bootstrap(database, "--key-file", str(tmp_path / "api-key"))
    assert isinstance(result.exception, InvalidRequestError)
    assert "expected brk_<16 hex>_<secret>" in str(result.exception) and "hunter2" not in str(result.exception)
    missing = bootstrap(database, "--key-file", str(tmp_path / "nothing"))
    assert isinstance(missing.exception, InvalidRequestError) and "cannot read --key-file" in str(missing.exception)
    assert keys(database) == []


def test_another_admin_key_blocks_the_import(database, tmp_path):
    generated = bootstrap(database)
    assert generated.exit_code == 0, generated.output
    (tmp_path / "api-key").write_text(ApiKey.generate().text)
    result = bootstrap(database, "--key-file", str(tmp_path / "api-key"))
    assert isinstance(result.exception, ConflictError) and "an admin key exists already" in str(result.exception)
    assert len(keys(database)) == 1
