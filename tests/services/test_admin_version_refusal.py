"""AdminService's RegisteredVersion carries a refusal (ModelRegistry.refuse: Precompute's
KV-compression gate) with its reason, so that `blockrag-admin model list` shows why a version a
tenant had is failed and no longer active."""

from __future__ import annotations

import pytest

from blockrag.registry import ModelRegistry, open_index_engine
from blockrag_services.admin.messages import version_message

REASON = ("model version {} is not served: kv_compression fp8_head: answers drift from uncompressed KV by a mean "
          "answer-token KL of 0.0001 nats over 2 questions, above the gate's 3e-05")


@pytest.fixture
def registry(tmp_path):
    engine = open_index_engine(f"sqlite:///{tmp_path}/index.db")
    yield ModelRegistry(engine)
    engine.dispose()


def test_a_refused_version_says_why(registry):
    before = registry.register("acme", "tiny", "fp-base", adapter_key="a", fingerprint="fp-1")
    version = registry.register("acme", "tiny", "fp-base", adapter_key="b", fingerprint="fp-2")
    registry.set_evaluation(version.version_id, {"kl": 0.01})
    for v in (before, version):
        registry.promote(v.version_id, "acme")
    assert version_message(registry.get(version.version_id)).refusal == ""
    registry.refuse(version.version_id, REASON.format(version.version_id))
    message = version_message(registry.get(version.version_id))
    assert (message.status, message.refusal) == ("failed", REASON.format(version.version_id))
    assert dict(message.evaluation) == {"kl": 0.01}  # the figures; the refusal is not one
    assert version_message(registry.get(before.version_id)).status == "active"
