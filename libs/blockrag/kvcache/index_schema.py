"""Tables of the CacheIndex and of the model registry (blockrag.registry), as the queries
see them.

The migrations (blockrag/kvcache/migrations/versions) create these tables; a test checks that
the migrated database and this module agree, so a change here needs a new migration.

Timestamps are unix seconds (double precision): the same type on SQLite and PostgreSQL, and
ordered without time zone surprises.
"""

from __future__ import annotations

import sqlalchemy as sa

NAME_LEN = 255  # tenant, collection, document_id, model_version
BLOCK_ID_LEN = 36  # "blk_" + 32 hex
VERSION_ID_LEN = 19  # "mv_" + 16 hex
RUN_ID_LEN = 20  # "run_" + 16 hex
STATUS_LEN = 16

metadata = sa.MetaData()


def _name(column: str, primary_key: bool = False) -> sa.Column:
    return sa.Column(column, sa.String(NAME_LEN), nullable=False, primary_key=primary_key)


blocks = sa.Table(
    "blocks",
    metadata,
    _name("tenant", primary_key=True),
    sa.Column("block_id", sa.String(BLOCK_ID_LEN), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("token_count", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

# One row per registered document; ``seq`` grows with every first registration, so it is the
# ingest order. Re-registering a document keeps its row (and place) and replaces its blocks.
documents = sa.Table(
    "documents",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    _name("tenant"),
    _name("collection"),
    _name("document_id"),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.UniqueConstraint("tenant", "collection", "document_id", name="uq_documents_name"),
)

# The ordered blocks of a document.
document_blocks = sa.Table(
    "document_blocks",
    metadata,
    sa.Column(
        "document_seq",
        sa.Integer,
        sa.ForeignKey("documents.seq", name="fk_document_blocks_document"),
        primary_key=True,
    ),
    sa.Column("position", sa.Integer, primary_key=True),
    _name("tenant"),
    sa.Column("block_id", sa.String(BLOCK_ID_LEN), nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant", "block_id"], ["blocks.tenant", "blocks.block_id"],
        name="fk_document_blocks_block",
    ),
    # A search checks each candidate block's collection through this index (index_search).
    sa.Index("ix_document_blocks_block", "tenant", "block_id"),
)

# Where the KV of a block, computed by one model version, is stored.
kv_entries = sa.Table(
    "kv_entries",
    metadata,
    _name("tenant", primary_key=True),
    sa.Column("block_id", sa.String(BLOCK_ID_LEN), primary_key=True),
    _name("model_version", primary_key=True),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("nbytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("last_access_at", sa.Double, nullable=False),
    sa.Column("hits", sa.BigInteger, nullable=False),
    sa.ForeignKeyConstraint(
        ["tenant", "block_id"], ["blocks.tenant", "blocks.block_id"], name="fk_kv_entries_block"
    ),
    # LRU eviction walks a tenant's entries by last access; stats and version-wide eviction
    # group them by model version.
    sa.Index("ix_kv_entries_lru", "tenant", "last_access_at"),
    sa.Index("ix_kv_entries_version", "tenant", "model_version"),
    # The orphan sweeper asks, per object listed, whether a row names it.
    sa.Index("ix_kv_entries_location", "location"),
)

LOCATION_LEN = 1024  # an object's location: "s3://bucket/prefix/<255-character name>" fits

# KV objects a writer is putting: its intent, recorded before the object exists and swapped for
# the kv_entries row in the transaction that commits it (kvcache.entry_writer). The orphan
# sweeper never deletes an object named here, and expires rows older than its grace period
# (a writer that crashed between the two steps).
kv_writes = sa.Table(
    "kv_writes",
    metadata,
    sa.Column("location", sa.String(LOCATION_LEN), primary_key=True),
    _name("tenant"),
    sa.Column("block_id", sa.String(BLOCK_ID_LEN), nullable=False),
    _name("model_version"),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Index("ix_kv_writes_started", "started_at"),
)


PLAN_ID_LEN = 20  # "pln_" + 16 hex: one BlockWriter plan, from its admission to the end of its write

# The blocks a write plan registered and is about to encode, claimed in the transaction that
# registers them and released when its write ends (BlockWriter): forget_blocks keeps a claimed
# block, so one writer's failed write cannot delete a block another writer planned before that
# writer's intents exist. No foreign key to blocks (a claim never outlives its block: forget_blocks
# checks claims first) so that tests and tools may TRUNCATE blocks alone. The orphan sweep expires
# the claims of writers gone (CacheIndex.expire_writes), as it does their intents.
block_claims = sa.Table(
    "block_claims",
    metadata,
    sa.Column("plan", sa.String(PLAN_ID_LEN), primary_key=True),
    _name("tenant", primary_key=True),
    sa.Column("block_id", sa.String(BLOCK_ID_LEN), primary_key=True),
    sa.Column("claimed_at", sa.Double, nullable=False),
    sa.Index("ix_block_claims_block", "tenant", "block_id"),
    sa.Index("ix_block_claims_claimed", "claimed_at"),
)

# Precompute tokens admitted per tenant and second (``second``: the end of the second, unix s):
# the rate quota's window, shared by every replica through the database (kvcache.index_usage).
quota_tokens = sa.Table(
    "quota_tokens",
    metadata,
    _name("tenant", primary_key=True),
    sa.Column("second", sa.BigInteger, primary_key=True),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Index("ix_quota_tokens_second", "second"),
)

# KV bytes an admitted write may add, held from its admission until its write ends (its entries
# then count instead), so two concurrent writes cannot both take the last bytes of a quota. A
# hold its writer never ended (a crash) lapses at ``expires_at``.
quota_holds = sa.Table(
    "quota_holds",
    metadata,
    sa.Column("plan", sa.String(PLAN_ID_LEN), primary_key=True),
    _name("tenant"),
    sa.Column("nbytes", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Index("ix_quota_holds_tenant", "tenant", "expires_at"),
)

# -- model registry (blockrag.registry) ------------------------------------------------------
# ``tenant`` is a scope there: "" is the shared namespace, usable by every tenant.

VERSION_STATUSES = ("candidate", "active", "retired", "failed")
RUN_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
PROMOTION_ACTIONS = ("promote", "rollback")


def _one_of(column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=name)


def _where(condition: str) -> dict[str, sa.TextClause]:
    """A partial index's predicate, for both backends."""
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


# Served versions of the model: the base model plus a LoRA adapter (adapter_key "" for the
# base itself). ``training`` and ``evaluation`` are JSON objects.
model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("version_id", sa.String(VERSION_ID_LEN), primary_key=True),
    sa.Column("tenant", sa.String(NAME_LEN), nullable=False),
    _name("base_model"),
    _name("base_fingerprint"),
    sa.Column("adapter_key", sa.Text, nullable=False),
    sa.Column(
        "parent_version",
        sa.String(VERSION_ID_LEN),
        sa.ForeignKey("model_versions.version_id", name="fk_model_versions_parent"),
        nullable=True,
    ),
    sa.Column("fingerprint", sa.String(NAME_LEN), nullable=True),
    sa.Column("training", sa.Text, nullable=False),
    sa.Column("evaluation", sa.Text, nullable=False),
    sa.Column("status", sa.String(STATUS_LEN), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("promoted_at", sa.Double, nullable=True),
    _one_of("status", VERSION_STATUSES, "ck_model_versions_status"),
    sa.Index("ix_model_versions_tenant", "tenant", "created_at"),
    # At most one active version per scope, whatever a buggy writer does.
    sa.Index("ux_model_versions_active", "tenant", unique=True, **_where("status = 'active'")),
)

# Every change of a scope's active version, in order (``seq``); version_id None is the base
# model. Rollback replays this history to find the version to return to.
model_promotions = sa.Table(
    "model_promotions",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.String(NAME_LEN), nullable=False),
    sa.Column(
        "version_id",
        sa.String(VERSION_ID_LEN),
        sa.ForeignKey("model_versions.version_id", name="fk_model_promotions_version"),
        nullable=True,
    ),
    sa.Column(
        "previous_version",
        sa.String(VERSION_ID_LEN),
        sa.ForeignKey("model_versions.version_id", name="fk_model_promotions_previous"),
        nullable=True,
    ),
    sa.Column("action", sa.String(STATUS_LEN), nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    _one_of("action", PROMOTION_ACTIONS, "ck_model_promotions_action"),
    sa.Index("ix_model_promotions_tenant", "tenant", "seq"),
)

# Block distillation runs. ``config`` and ``metrics`` are JSON objects.
distill_runs = sa.Table(
    "distill_runs",
    metadata,
    sa.Column("run_id", sa.String(RUN_ID_LEN), primary_key=True),
    sa.Column("tenant", sa.String(NAME_LEN), nullable=False),
    sa.Column("status", sa.String(STATUS_LEN), nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("total_steps", sa.Integer, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("checkpoint_key", sa.Text, nullable=True),
    sa.Column(
        "version_id",
        sa.String(VERSION_ID_LEN),
        sa.ForeignKey("model_versions.version_id", name="fk_distill_runs_version"),
        nullable=True,
    ),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    _one_of("status", RUN_STATUSES, "ck_distill_runs_status"),
    sa.Index("ix_distill_runs_tenant", "tenant", "created_at"),
    # One run going (pending or running) per scope.
    sa.Index(
        "ux_distill_runs_going", "tenant", unique=True,
        **_where("status IN ('pending', 'running')"),
    ),
)

# Questions asked, with the blocks that answered them: training data for distillation.
# ``block_ids`` is a JSON list.
question_log = sa.Table(
    "question_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _name("tenant"),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("block_ids", sa.Text, nullable=False),
    _name("model_version"),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_question_log_tenant", "tenant", "id"),
    sa.Index("ix_question_log_created", "created_at"),
)


# -- API keys (blockrag.auth) ----------------------------------------------------------------

KEY_ID_LEN = 20  # "key_" + 16 hex
ROLES = ("reader", "writer", "admin")

# One row per API key. The secret is never stored: ``secret_hash`` is the hex SHA-256 of the
# whole key (blockrag.auth.api_key says why a plain hash is enough). A revoked key keeps its row
# (``revoked_at`` set), so `keys list` shows who had access.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(KEY_ID_LEN), primary_key=True),
    _name("tenant"),
    sa.Column("role", sa.String(STATUS_LEN), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("label", sa.String(NAME_LEN), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
    _one_of("role", ROLES, "ck_api_keys_role"),
    sa.Index("ix_api_keys_tenant", "tenant", "created_at"),
)
