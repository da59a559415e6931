"""ObjectStore contract, run against every backend (a local directory, a real S3 server),
then what is backend-specific: URLs, locations, layout and failures."""

from __future__ import annotations

import inspect
import os
import secrets
import threading
import time
from pathlib import Path

import pytest

from blockrag.errors import InvalidRequestError, ObjectStoreError, StorageConfigError
from blockrag.kvcache.key import CacheKey
from blockrag.kvcache.local_store import LocalDirectoryStore
from blockrag.kvcache.object_store import (
    LocalObjectStore,
    ObjectStore,
    open_object_store,
)
from blockrag.kvcache.s3_store import S3Config, S3ObjectStore
from fixtures.ports import free_port
from fixtures.s3 import S3Server, rclone_s3


def new_bucket() -> str:
    return f"blockrag-{secrets.token_hex(4)}"


def s3_store(server: S3Server, **overrides: object) -> S3ObjectStore:
    config = dict(
        endpoint=server.endpoint, bucket=new_bucket(), access_key=server.access_key,
        secret_key=server.secret_key,
    )
    return S3ObjectStore(S3Config(**{**config, **overrides}))  # type: ignore[arg-type]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return s3_store(request.getfixturevalue("s3_server"))


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> S3Server:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    return s3_server


# -- the contract ------------------------------------------------------------------------------


def test_implements_the_whole_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    for name in ("put", "get", "delete", "exists", "location_for", "list_objects", "remove_partial_writes"):
        expected = inspect.signature(getattr(ObjectStore, name))
        actual = inspect.signature(getattr(type(store), name))
        assert list(actual.parameters) == list(expected.parameters), name


def test_round_trip(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    location = store.put("blk_0123abcd@model-1", data)
    assert store.get(location) == data and store.exists(location)
    assert store.location_for("blk_0123abcd@model-1") == location


def test_overwrite_and_empty_object(store: ObjectStore) -> None:
    first = store.put("obj", b"first")
    second = store.put("obj", b"")
    assert first == second and store.get(second) == b"" and store.exists(second)


def test_accepts_bytearray_and_memoryview(store: ObjectStore) -> None:
    assert store.get(store.put("a1", bytearray(b"abc"))) == b"abc"
    assert store.get(store.put("a2", memoryview(b"xyz"))) == b"xyz"


def test_missing_object(store: ObjectStore) -> None:
    location = store.location_for("never-written")
    assert store.get(location) is None and not store.exists(location)
    store.delete(location)  # deleting nothing is fine


def test_delete(store: ObjectStore) -> None:
    keep, drop = store.put("keep", b"k"), store.put("drop", b"d")
    store.delete(drop)
    store.delete(drop)
    assert store.get(drop) is None and not store.exists(drop)
    assert store.get(keep) == b"k"


def test_list_objects(store: ObjectStore) -> None:
    assert list(store.list_objects()) == []
    before = time.time()
    put = {name: store.put(name, b"x" * n) for name, n in (("abc", 3), ("abd", 0), ("zz-1.2", 7))}
    store.delete(store.put("gone", b"g"))
    listed = {o.name: o for o in store.list_objects()}
    assert {n: (o.location, o.nbytes) for n, o in listed.items()} == {
        "abc": (put["abc"], 3), "abd": (put["abd"], 0), "zz-1.2": (put["zz-1.2"], 7)}
    # the store's clock (file mtime, S3 LastModified in whole seconds) near ours
    assert all(before - 2 < o.modified_at < time.time() + 2 for o in listed.values())


def test_remove_partial_writes_keeps_objects(store: ObjectStore) -> None:
    location = store.put("whole", b"w")
    assert store.remove_partial_writes(time.time() + 60) == 0 and store.get(location) == b"w"


def test_a_reader_never_sees_half_an_object(store: ObjectStore) -> None:
    # 4 MiB objects written while a reader polls them: it sees nothing or all of one, never a part
    size, names = 4 << 20, [f"big-{i}" for i in range(6)]
    seen: list[int | str | None] = []  # None: not there yet; a length; "wrong bytes"
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for i, name in enumerate(names):
                data = store.get(store.location_for(name))
                seen.append(None if data is None else len(data) if data == bytes([i]) * len(data) else "wrong bytes")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i, name in enumerate(names):
            store.put(name, bytes([i]) * size)
            store.put(name, bytes([i]) * size)  # an overwrite is atomic too
    finally:
        done.set()
        reader.join()
    assert set(seen) <= {None, size} and len(seen) >= len(names)


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "../up", "sp ace", "x" * 256, "é"])
def test_rejects_bad_names(store: ObjectStore, name: str) -> None:
    with pytest.raises(InvalidRequestError, match="object name"):
        store.put(name, b"x")


@pytest.mark.parametrize(
    "location",
    ["s3://another-bucket/kv/obj", "file:///etc/passwd", "http://example.com/kv/obj", "obj", ""],
)
def test_refuses_locations_of_other_stores(store: ObjectStore, location: str) -> None:
    for method in (store.get, store.exists, store.delete):
        with pytest.raises(StorageConfigError):
            method(location)


# -- local directory ---------------------------------------------------------------------------


def test_local_layout_is_atomic_and_fanned_out(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    location = store.put("abcdef", b"payload")
    assert location == (tmp_path / "objects" / "ab" / "abcdef").resolve().as_uri()
    files = [p.relative_to(store.root) for p in store.root.rglob("*") if p.is_file()]
    assert files == [Path("ab/abcdef")]  # no temp file left behind
    # a write in flight (its temp file) is not an object
    (store.root / "ab" / ".tmp-crashed").write_bytes(b"half")
    assert [o.name for o in store.list_objects()] == ["abcdef"]
    # one whose writer died an hour ago is removed; a younger one may still be renamed: kept
    os.utime(store.root / "ab" / ".tmp-crashed", (time.time() - 3600, time.time() - 3600))
    (store.root / "ab" / ".tmp-writing").write_bytes(b"half")
    assert store.remove_partial_writes(time.time() - 60) == 1
    assert sorted(p.name for p in (store.root / "ab").iterdir()) == [".tmp-writing", "abcdef"]


def test_local_locations_outside_root_are_refused(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (tmp_path / "secret").write_bytes(b"s")
    for location in (
        (tmp_path / "secret").as_uri(),
        store.location_for("abc").replace("/ab/abc", "/ab/../../secret"),
        store.location_for("abc").replace("/ab/abc", "/zz/abc"),  # wrong fan-out directory
        store.location_for("abc").replace("file:///", "file://otherhost/"),
    ):
        with pytest.raises(StorageConfigError):
            store.get(location)


def test_local_store_and_directory_store_share_files(tmp_path: Path) -> None:
    # The pipeline's LocalDirectoryStore writes what a service's LocalObjectStore reads.
    key = CacheKey.of("default", "fp", [1, 2, 3])
    LocalDirectoryStore(tmp_path).put(key, b"kv")
    objects = LocalObjectStore(tmp_path)
    assert objects.get(objects.location_for(key.hex)) == b"kv"


def test_local_write_failure_is_typed(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    (store.root / "ab").write_bytes(b"a file where the fan-out directory should be")
    with pytest.raises(ObjectStoreError, match="cannot write"):
        store.put("abc", b"x")


# -- URLs ------------------------------------------------------------------------------------


def test_open_local_from_path_and_file_url(tmp_path: Path) -> None:
    by_path = open_object_store(str(tmp_path / "a"))
    by_url = open_object_store((tmp_path / "a").as_uri())
    assert isinstance(by_path, LocalObjectStore) and isinstance(by_url, LocalObjectStore)
    assert by_path.root == by_url.root == (tmp_path / "a").resolve()
    assert by_url.get(by_path.put("x1", b"1")) == b"1"


def test_open_s3_from_url(s3_env: S3Server) -> None:
    bucket = new_bucket()
    store = open_object_store(f"s3://{bucket}/cache/kv?endpoint={s3_env.endpoint}&secure=false")
    assert isinstance(store, S3ObjectStore)
    location = store.put("obj", b"data")
    assert location == f"s3://{bucket}/cache/kv/obj"
    assert (s3_env.root / bucket / "cache" / "kv" / "obj").read_bytes() == b"data"
    # A second store (another process) reads what the first wrote.
    other = open_object_store(f"s3://{bucket}?endpoint={s3_env.endpoint}")
    assert other.get(location) == b"data"


def test_s3_config_from_url() -> None:
    env = {"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "sk"}
    config = S3Config.from_url(
        "s3://my-bucket/a/b/?endpoint=s3.example.com:443&secure=TRUE&region=eu-west-3"
        "&timeout_s=2.5&retries=0",
        env,
    )
    assert config == S3Config(
        endpoint="s3.example.com:443", bucket="my-bucket", access_key="ak", secret_key="sk",
        secure=True, prefix="a/b", region="eu-west-3", timeout_s=2.5, retries=0,
    )
    assert "sk" not in repr(config)
    plain = S3Config.from_url("s3://my-bucket?endpoint=h:9000", env)
    assert (plain.prefix, plain.secure, plain.region) == ("kv", False, None)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("s3://my-bucket/kv", "endpoint"),
        ("s3:///kv?endpoint=h:1", "malformed"),
        ("s3://my-bucket/kv?endpoint=h:1&secur=true", "unknown or repeated"),
        ("s3://my-bucket/kv?endpoint=h:1&endpoint=h:2", "unknown or repeated"),
        ("s3://my-bucket/kv?endpoint=h:1&secure=maybe", "secure"),
        ("s3://my-bucket/kv?endpoint=h:1&retries=many", "retries"),
        ("s3://my-bucket/kv?endpoint=http://h:1", "endpoint"),
        ("s3://ab/kv?endpoint=h:1", "bucket name"),
        ("s3://Bad_Bucket/kv?endpoint=h:1", "bucket name"),
        ("s3://ak:sk@my-bucket/kv?endpoint=h:1", "credentials"),
        ("s3://my-bucket/kv//x?endpoint=h:1", "prefix"),
        ("ftp://host/dir", "unsupported scheme"),
        ("file://relative/dir", "absolute path"),
        ("", "empty"),
    ],
)
def test_bad_urls(monkeypatch: pytest.MonkeyPatch, url: str, match: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk")
    with pytest.raises(StorageConfigError, match=match):
        open_object_store(url)


@pytest.mark.parametrize("missing", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_missing_credentials(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk")
    monkeypatch.delenv(missing)
    with pytest.raises(StorageConfigError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        open_object_store("s3://my-bucket/kv?endpoint=127.0.0.1:9")


# -- S3 failures -------------------------------------------------------------------------------


def test_connection_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk")
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ObjectStoreError) as info:
        open_object_store(f"s3://my-bucket/kv?endpoint={endpoint}&retries=0")
    message = str(info.value)
    assert endpoint in message and "my-bucket" in message and "Connection refused" in message


def test_server_gone_after_open(tmp_path: Path) -> None:
    with rclone_s3(tmp_path) as server:
        store = s3_store(server, retries=0)
        location = store.put("obj", b"x")
    for call in (lambda: store.get(location), lambda: store.put("obj", b"y"),
                 lambda: store.exists(location), lambda: store.delete(location)):
        with pytest.raises(ObjectStoreError, match=server.endpoint):
            call()


def test_wrong_credentials(s3_server: S3Server) -> None:
    with pytest.raises(ObjectStoreError, match="AWS_SECRET_ACCESS_KEY") as info:
        s3_store(s3_server, secret_key="wrong")
    assert s3_server.endpoint in str(info.value)


def test_existing_bucket_is_reused(s3_server: S3Server) -> None:
    first = s3_store(s3_server)
    location = first.put("obj", b"x")
    again = s3_store(s3_server, bucket=first.config.bucket)
    assert again.get(location) == b"x"
