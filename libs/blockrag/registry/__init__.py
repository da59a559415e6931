"""The SQL side of block distillation: model versions and their promotions (ModelRegistry),
distillation runs (RunStore) and the question log (QuestionLog).

The tables live in the cache index database and migrate with it (the same Alembic
revisions). Build the stores over a CacheIndex's engine, or a migrated engine of their own:

    registry = ModelRegistry(index.engine)
    engine = open_index_engine("postgresql+psycopg://user@host:5432/db")  # migrates
    runs, log = RunStore(engine), QuestionLog(engine, retention_days=30, max_rows_per_tenant=10_000)

The stores do not own the engine: whoever made it disposes of it. Errors are typed:
NotFoundError (unknown id), InvalidRequestError (bad input), ConflictError (a run is already
going, or a version or run is not in a state that allows the change), CacheIndexError (the
database failed).
"""

from blockrag.kvcache.index import open_index_engine
from blockrag.registry._database import SHARED
from blockrag.registry.model_registry import ModelRegistry, ModelVersion, Promotion
from blockrag.registry.question_log import LoggedQuestion, QuestionLog
from blockrag.registry.run_store import Run, RunStore

__all__ = [
    "SHARED",
    "LoggedQuestion",
    "ModelRegistry",
    "ModelVersion",
    "Promotion",
    "QuestionLog",
    "Run",
    "RunStore",
    "open_index_engine",
]
