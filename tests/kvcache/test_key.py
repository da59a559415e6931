"""Cache keys: exact documented encoding, stable across processes, collision-free framing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blockrag.errors import InvalidBlockError
from blockrag.kvcache import CacheKey, cache_key, token_ids_digest

LIBS = Path(__file__).resolve().parents[2] / "libs"
# An id above 2**32 checks that ids are 64-bit, a negative one that they are signed.
IDS = [0, 1, 151_643, 2**40 + 7, -5]


def _expected(namespace: str, fingerprint: str, ids: list[int]) -> str:
    """The documented encoding, rebuilt without the library's helpers."""
    ns, fp = namespace.encode("utf-8"), fingerprint.encode("utf-8")
    raw = len(ns).to_bytes(8, "little") + ns + len(fp).to_bytes(8, "little") + fp
    raw += b"".join(i.to_bytes(8, "little", signed=True) for i in ids)
    return hashlib.sha256(raw).hexdigest()


def test_known_value() -> None:
    key = CacheKey.of("default", "qwen2-0.5b@abc123", IDS)
    assert key.hex == _expected("default", "qwen2-0.5b@abc123", IDS)
    assert str(key) == key.hex
    assert cache_key("default", "qwen2-0.5b@abc123", IDS) == key.hex


# Literal keys, pinned: every stored entry and the prompt's opening block are named by their key,
# so a change of derivation (encoding, hash, argument order) orphans the whole store. If one of
# these fails, the change needs a migration of the stores, not a new expected value.
PINNED = [
    (("default", "qwen2-0.5b@abc123", IDS), "9e65af438247cde4a720b5912c46c740a5defa7483334a27a9c17cd7660e9461"),
    (("acme", "mv_0123456789abcdef", [9707, 11, 1879]),
     "123d6e917ec00d8574fd539250d2aabdcfa75aed6a4de10b863554749ac80d17"),
    (("", "m", [1]), "6507496d73a04cea8cce658e094f7f43f65ee785e10b923b3c4de31392d80778"),
    (("café", "m", [1]), "e9e76296e1d524fd5bc286faa39a3ef0d4e5b2c6d4737df296040595a535edf4"),
]


@pytest.mark.parametrize(("args", "expected"), PINNED)
def test_keys_are_pinned_literally(args: tuple, expected: str) -> None:
    assert CacheKey.of(*args).hex == expected
    assert cache_key(*args) == expected


def test_non_ascii_namespace_is_utf8() -> None:
    assert CacheKey.of("café", "m", [1]).hex == _expected("café", "m", [1])


def test_accepts_any_int_sequence() -> None:
    assert CacheKey.of("n", "m", (1, 2, 3)) == CacheKey.of("n", "m", [1, 2, 3])
    assert CacheKey.of("n", "m", range(1, 4)) == CacheKey.of("n", "m", [1, 2, 3])


@pytest.mark.parametrize("seed", ["0", "12345"])
def test_same_key_in_other_processes(seed: str) -> None:
    code = (
        "from blockrag.kvcache import CacheKey\n"
        f"print(CacheKey.of('default', 'qwen2-0.5b@abc123', {IDS!r}).hex)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LIBS), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == CacheKey.of("default", "qwen2-0.5b@abc123", IDS).hex


def test_every_input_matters() -> None:
    base = CacheKey.of("default", "m1", [1, 2, 3])
    assert CacheKey.of("other", "m1", [1, 2, 3]) != base
    assert CacheKey.of("default", "m2", [1, 2, 3]) != base
    assert CacheKey.of("default", "m1", [3, 2, 1]) != base
    assert CacheKey.of("default", "m1", [1, 2]) != base
    assert CacheKey.of("default", "m1", [1, 2, 3, 0]) != base


def test_namespace_fingerprint_boundary_is_unambiguous() -> None:
    assert CacheKey.of("ab", "c", [1]) != CacheKey.of("a", "bc", [1])
    assert CacheKey.of("", "abc", [1]) != CacheKey.of("abc", "", [1])


def test_empty_namespace_allowed() -> None:
    assert CacheKey.of("", "m", [1]).hex == _expected("", "m", [1])


def test_empty_tokens_rejected() -> None:
    with pytest.raises(InvalidBlockError, match="empty"):
        CacheKey.of("default", "m", [])


def test_out_of_range_id_rejected() -> None:
    with pytest.raises(InvalidBlockError, match="int64"):
        CacheKey.of("default", "m", [2**63])


def test_non_str_namespace_rejected() -> None:
    with pytest.raises(TypeError, match="namespace"):
        CacheKey.of(b"default", "m", [1])  # type: ignore[arg-type]


def test_key_from_hex() -> None:
    key = CacheKey.of("default", "m", [1, 2])
    assert CacheKey(key.hex) == key
    assert {key: 1}[CacheKey(key.hex)] == 1
    with pytest.raises(ValueError, match="64 lowercase hex"):
        CacheKey("not-a-digest")
    with pytest.raises(ValueError):
        CacheKey(key.hex.upper())


def test_token_ids_digest() -> None:
    raw = b"".join(i.to_bytes(8, "little", signed=True) for i in IDS)
    assert token_ids_digest(IDS) == hashlib.sha256(raw).hexdigest()
    assert token_ids_digest(tuple(IDS)) == token_ids_digest(IDS)
