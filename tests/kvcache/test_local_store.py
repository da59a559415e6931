from blockrag.kvcache import CacheKey
from blockrag.kvcache.local_store import LocalDirectoryStore


def test_put_get_delete(tmp_path):
    store = LocalDirectoryStore(tmp_path / "kv")
    key = CacheKey.of("default", "fp", [1, 2, 3])
    assert store.get(key) is None and not store.contains(key)
    store.put(key, b"abc")
    store.put(key, b"abcd")  # overwrite is atomic
    assert store.get(key) == b"abcd" and store.contains(key)
    assert [p.name for p in (tmp_path / "kv").rglob("*") if p.is_file()] == [key.hex]
    store.delete(key)
    assert store.get(key) is None
