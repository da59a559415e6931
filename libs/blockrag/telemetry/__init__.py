"""Telemetry: the platform's Prometheus metrics (``metrics``) and the per-node exporter (``exporter``).

Importing this package imports prometheus_client: in a worker process, set
``PROMETHEUS_MULTIPROC_DIR`` before that, or its metrics stay invisible to the exporter.
"""

from blockrag.telemetry.metrics import (
    ALL_METRICS,
    TIERS,
    AnswerGauges,
    Tier,
    TokenStreamTimer,
    metric_names,
    multiprocess_active,
    observe_blocks,
    observe_cache_maintenance,
    observe_precompute_batch,
    observe_prompt,
    observe_rejected_entry,
    observe_store_unavailable,
    observe_request,
    observe_segments,
    set_model_warm,
    set_replica_cache,
    set_replica_tier_lookups,
    time_segmentation,
)
from blockrag.telemetry.tenant_labels import OTHER, TENANT_LABELS, TenantLabels, learn_tenant

__all__ = [
    "OTHER",
    "TENANT_LABELS",
    "learn_tenant",
    "TenantLabels",
    "ALL_METRICS",
    "AnswerGauges",
    "TIERS",
    "Tier",
    "TokenStreamTimer",
    "metric_names",
    "multiprocess_active",
    "observe_blocks",
    "observe_cache_maintenance",
    "observe_precompute_batch",
    "observe_prompt",
    "observe_rejected_entry",
    "observe_store_unavailable",
    "observe_request",
    "observe_segments",
    "set_model_warm",
    "set_replica_cache",
    "set_replica_tier_lookups",
    "time_segmentation",
]
