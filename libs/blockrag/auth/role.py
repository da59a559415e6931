"""Role: what an API key may do. Ordered: each role includes the ones below it."""

from __future__ import annotations

import enum

from blockrag.errors import InvalidRequestError


class Role(enum.IntEnum):
    """reader: Generate (ask). writer: Ingest, plus reader. admin: AdminService and the internal
    services, plus writer."""

    READER = 1
    WRITER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Role:
        """InvalidRequestError naming the roles for anything else."""
        try:
            return cls[value.strip().upper()]
        except (KeyError, AttributeError):
            raise InvalidRequestError(
                f"unknown role {value!r}; use one of {', '.join(r.label for r in cls)}") from None

    def allows(self, needed: Role) -> bool:
        return self >= needed
