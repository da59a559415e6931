"""ApiKey: the text a client sends (`authorization: Bearer <key>`), and the hash that is stored.

A key is "brk_" + its id's 16 hex digits + "_" + 43 characters of a 256-bit random secret. The
id is public (listed, revoked by); the secret is shown once, at creation. The database keeps
SHA-256 of the whole key only: a slow KDF protects guessable passwords, while a 256-bit random
secret cannot be guessed from its hash, and a plain hash keeps every request's check cheap.
Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from blockrag.errors import AuthenticationError

PREFIX = "brk_"
_ID_HEX = 16
_SECRET_BYTES = 32
_SHAPE = re.compile(rf"^{PREFIX}([0-9a-f]{{{_ID_HEX}}})_([A-Za-z0-9_-]{{43}})$")
_DOMAIN = b"blockrag-api-key\0"  # the hash of a key is never the hash of some other value


@dataclass(frozen=True)
class ApiKey:
    key_id: str  # "key_" + 16 hex: the public name of the key
    text: str  # the whole key, secret included: give it to the client, never store it

    @classmethod
    def generate(cls) -> ApiKey:
        hex_id = secrets.token_hex(_ID_HEX // 2)
        return cls(f"key_{hex_id}", f"{PREFIX}{hex_id}_{secrets.token_urlsafe(_SECRET_BYTES)}")

    @classmethod
    def parse(cls, text: str) -> ApiKey:
        """AuthenticationError for text that is not a key's shape (the message never echoes it)."""
        match = _SHAPE.match(text.strip())
        if match is None:
            raise AuthenticationError(
                "the API key is malformed: expected brk_<16 hex>_<secret>, as `blockrag-admin keys "
                "create` prints it")
        return cls(f"key_{match.group(1)}", match.group(0))

    @property
    def digest(self) -> str:
        """What the database stores: hex SHA-256 of the key."""
        return hashlib.sha256(_DOMAIN + self.text.encode()).hexdigest()

    def matches(self, stored_digest: str) -> bool:
        """Constant-time comparison with a stored digest."""
        return hmac.compare_digest(self.digest.encode(), stored_digest.encode())

    def __repr__(self) -> str:  # never the secret in a log line or a traceback
        return f"ApiKey({self.key_id!r})"
