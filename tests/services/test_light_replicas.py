"""The replicas that load no model (admin, cache index) import neither torch nor transformers:
each Serve replica is a process of its own, and that stack would cost it hundreds of MB and
seconds of start-up for nothing."""

from __future__ import annotations

import os
import subprocess
import sys

HEAVY = ("torch", "transformers")


def test_admin_and_cache_index_replicas_import_no_model_stack():
    code = (
        "import sys\n"
        "import blockrag_services.admin.deployment, blockrag_services.cache_index.deployment\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    # a fresh interpreter: this test process has imported torch already
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == "", f"imported by the light replicas: {out.stdout.strip()}"
