"""Registry rows (blockrag.registry), API keys (blockrag.auth) and cache maintenance
(blockrag.kvcache.sweeper, .eviction) as AdminService messages, and back for requests."""

from __future__ import annotations

import json
from typing import Any

from blockrag.auth import KeyRecord, Role
from blockrag.errors import InvalidRequestError
from blockrag.kvcache.eviction import EvictionPolicy, EvictionReport, Watermarks
from blockrag.registry import ModelVersion, Run
from blockrag.v1 import admin_pb2 as pb
from blockrag_services.distillation.request import RunRequest


def run_message(run: Run) -> pb.DistillationRun:
    m = run.metrics
    return pb.DistillationRun(
        run_id=run.run_id, tenant=run.tenant, status=run.status, step=run.step, total_steps=run.total_steps,
        phase=str(m.get("phase", "")), loss=_number(m.get("loss")), kl=_number(m.get("kl")),
        tokens_per_s=_number(m.get("tokens_per_s")), metrics_json=json.dumps(m, sort_keys=True),
        config_json=json.dumps(run.config, sort_keys=True), version_id=run.version_id or "", error=run.error or "",
        cancel_requested=run.cancel_requested, created_at=run.created_at, updated_at=run.updated_at)


def version_message(version: ModelVersion) -> pb.RegisteredVersion:
    return pb.RegisteredVersion(
        version_id=version.version_id, tenant=version.tenant, status=version.status,
        parent_version=version.parent_version or "", base_model=version.base_model,
        fingerprint=version.fingerprint or "", adapter_key=version.adapter_key,
        evaluation={k: float(v) for k, v in version.evaluation.items() if isinstance(v, int | float)},
        training_json=json.dumps(version.training, sort_keys=True), created_at=version.created_at,
        promoted_at=version.promoted_at or 0.0, refusal=version.refusal or "")


def run_request(request: pb.StartDistillationRequest) -> RunRequest:
    """InvalidRequestError for config_json that is not a JSON object (or nests beyond the parser's
    depth), or negative numbers."""
    overrides: Any = {}
    if request.config_json.strip():
        try:
            overrides = json.loads(request.config_json)
        except json.JSONDecodeError as e:
            raise InvalidRequestError(f"config_json is not JSON: {e}") from None
        except RecursionError:  # the parser recurses once per nested array or object
            raise InvalidRequestError("config_json is nested too deeply: pass a flat object of settings") from None
        if not isinstance(overrides, dict):
            raise InvalidRequestError("config_json must be a JSON object of distillation settings")
    for name in ("steps", "examples", "eval_questions"):
        if getattr(request, name) < 0:
            raise InvalidRequestError(f"{name} must be >= 0 (0: the platform's default)")
    return RunRequest(tenant=request.tenant, collection=request.collection, directory=request.directory,
                      steps=request.steps, examples=request.examples, eval_questions=request.eval_questions,
                      overrides=overrides, auto_promote=request.auto_promote)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def key_message(key: KeyRecord) -> pb.ApiKey:
    return pb.ApiKey(key_id=key.key_id, tenant=key.tenant, role=pb.Role.Value(f"ROLE_{key.role.name}"),
                     label=key.label, created_at=key.created_at, revoked_at=key.revoked_at or 0.0)


def role_of(role: int) -> Role:
    """InvalidRequestError for ROLE_UNSPECIFIED or an unknown number."""
    if role not in pb.Role.values() or role == pb.ROLE_UNSPECIFIED:
        raise InvalidRequestError("role is required: reader, writer or admin")
    return Role[pb.Role.Name(role).removeprefix("ROLE_")]


def eviction_policy(request: pb.EvictCacheRequest) -> EvictionPolicy:
    """The request's bounds (a high watermark of 0 or unset: no bound), checked by the policy."""
    def marks(m: pb.Watermarks) -> Watermarks | None:
        return Watermarks(m.high_bytes, m.low_bytes) if m.high_bytes or m.low_bytes else None

    return EvictionPolicy(tenant=marks(request.tenant_bounds), store=marks(request.store_bounds),
                          ttl_s=request.ttl_s or None)


def eviction_message(report: EvictionReport) -> pb.EvictCacheResponse:
    return pb.EvictCacheResponse(
        entries=report.entries, bytes=report.bytes, by_reason=report.by_reason,
        tenants=[pb.TenantBytes(tenant=t, entries=n, bytes=b) for t, (n, b) in report.by_tenant.items()])
