"""The CLIs as a user runs them, for the tests of the platform with authentication on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ADMIN_TENANT = "ops"  # the tenant of the bootstrap's admin key


def cli(*args: str, address: str = "", key: str | None = None) -> subprocess.CompletedProcess:
    """One of the CLIs (`blockrag`, `blockrag-admin`): no API key but ``key``."""
    env = dict(os.environ, COLUMNS="200", BLOCKRAG_ADDRESS=address)
    env.pop("BLOCKRAG_API_KEY", None)
    if key is not None:
        env["BLOCKRAG_API_KEY"] = key
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, timeout=300)
