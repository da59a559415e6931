"""API keys and roles: who may call what on the platform.

    store = KeyStore(open_index_engine(url))            # the keys live in the index database
    record, key = store.create("acme", Role.WRITER)    # key.text: shown once, stored hashed
    principal = store.verify(key.text)                 # Principal(key_id, "acme", Role.WRITER)
    Authorizer(lambda: store, required=True).admit(metadata, Role.READER, "Generate")

The services call Authorizer.admit for every call that arrives through the gRPC port
(services/blockrag_services/access.py); everything else is here, and runs without Ray.
"""

from blockrag.auth.api_key import ApiKey
from blockrag.auth.authorizer import Authorizer, bearer_token
from blockrag.auth.key_store import KeyRecord, KeyStore
from blockrag.auth.principal import DEFAULT_TENANT, Principal
from blockrag.auth.role import Role

__all__ = ["DEFAULT_TENANT", "ApiKey", "Authorizer", "KeyRecord", "KeyStore", "Principal", "Role", "bearer_token"]
