"""Generate the Python stubs of protos/blockrag/v1 into libs/blockrag/v1 (messages, .pyi, gRPC).

Run after editing a .proto:  .venv/bin/python protos/generate.py
The stubs are committed; tests/protos/test_protos.py fails when they are out of date. A client
in another codebase generates its own from protos/ the same way (grpcio-tools, this include root).
"""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parent
PACKAGE = "blockrag/v1"
INIT = '"""Generated gRPC stubs of protos/blockrag/v1 (protos/generate.py); do not edit."""\n'


def generate(out: Path) -> list[Path]:
    """Write the stubs under out/blockrag/v1; return the files written."""
    target = out / PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).glob("*.proto"))
    well_known = str(files("grpc_tools") / "_proto")
    code = protoc.main(["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={out}",
                        f"--pyi_out={out}", f"--grpc_python_out={out}", *sources])
    if code != 0:
        raise SystemExit(f"protoc failed with status {code}")
    (target / "__init__.py").write_text(INIT)
    return sorted(target.iterdir())


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else PROTOS.parent / "libs"
    for path in generate(out):
        print(path)
