"""Access: who may call a servicer method from the gRPC port, declared on the method.

    @unary(SERVICE, pb.IngestResponse, access=WRITE)

The decision is blockrag.auth.Authorizer's; this only hands it the call's metadata and, for the
data plane, puts the key's tenant on the request (the servicer reads `request.tenant` as before).
A deployment with guarded methods has an `authorizer` attribute (`authorizer(config)`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from blockrag.auth import Authorizer, KeyStore, Role


@dataclass(frozen=True)
class Access:
    role: Role
    internal: bool = False  # the cache index's and precompute's methods: an admin key from outside
    tenant_bound: bool = False  # the request's `tenant` is the key's (PERMISSION_DENIED for another)

    async def admit(self, authorizer: Authorizer, request, metadata: Iterable, action: str) -> None:
        if not self.internal and not authorizer.required:
            return  # an open platform's public method: no key is read
        principal = await asyncio.to_thread(authorizer.admit, list(metadata), self.role, action,
                                            internal=self.internal)
        if principal is not None and self.tenant_bound:
            request.tenant = principal.tenant_for(request.tenant)


READ = Access(Role.READER, tenant_bound=True)  # Generate
WRITE = Access(Role.WRITER, tenant_bound=True)  # Ingest
SEGMENT = Access(Role.READER)  # Segment: touches no tenant's data
ADMIN = Access(Role.ADMIN)  # AdminService: platform-wide, its requests name tenants as scopes
INTERNAL = Access(Role.ADMIN, internal=True)


def authorizer(config, engine: sa.Engine | None = None) -> Authorizer:
    """The Authorizer of a deployment with PlatformConfig ``config``, over its own index engine
    when it has one (else one opened on the first key to check)."""

    def keys() -> KeyStore:
        if engine is not None:
            return KeyStore(engine)
        from blockrag.kvcache.index import open_index_engine

        return KeyStore(open_index_engine(config.database))

    return Authorizer(keys, required=config.auth)
