"""Principal: who an authenticated call comes from (its key's id, tenant and role), and what
that allows."""

from __future__ import annotations

from dataclasses import dataclass

from blockrag.auth.role import Role
from blockrag.errors import PermissionDeniedError

DEFAULT_TENANT = "default"  # as in the cache index: an empty tenant is this one


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    role: Role

    def require(self, needed: Role, action: str) -> None:
        """PermissionDeniedError unless this key's role includes ``needed``."""
        if not self.role.allows(needed):
            raise PermissionDeniedError(
                f"{action} needs the {needed.label} role; this API key has the {self.role.label} role. "
                f"Ask an admin for a key with the {needed.label} role (blockrag-admin keys create)")

    def tenant_for(self, requested: str) -> str:
        """The tenant a data-plane call acts for: always the key's. A request naming another
        tenant is refused, not silently redirected, so that a misconfigured client finds out
        at once instead of writing to or reading from a tenant it did not mean."""
        if requested and requested != self.tenant and not (
                requested == DEFAULT_TENANT and self.tenant == DEFAULT_TENANT):
            raise PermissionDeniedError(
                f"this API key belongs to tenant {self.tenant!r} and cannot act for tenant {requested!r}; "
                f"leave the tenant empty (the key's is used) or use a key of that tenant")
        return self.tenant
