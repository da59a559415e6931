"""The GPU suite collects on the GPU image, which has torch, transformers, triton, peft, grpcio,
protobuf and prometheus-client but not psycopg, Ray or SQLAlchemy. Not marked gpu: it runs in the
default suite, so a top-level `import psycopg` (or ray, sqlalchemy) in the fixture plugins or in a GPU test
module fails here and not only on the device."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# what the GPU image lacks: importing any of these there raises ImportError
MISSING_ON_GPU_IMAGE = ("psycopg", "ray", "sqlalchemy")


def test_gpu_suite_collects_without_psycopg_and_ray(tmp_path):
    for name in MISSING_ON_GPU_IMAGE:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU image')\n")
    probe = tmp_path / "probe.py"  # guards the guard: the stubs really shadow the installed packages
    probe.write_text("import importlib, sys\n"
                     f"for name in {MISSING_ON_GPU_IMAGE!r}:\n"
                     "    try:\n        importlib.import_module(name)\n"
                     "    except ImportError:\n        continue\n"
                     "    sys.exit(f'{name} imported')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    assert subprocess.run([sys.executable, str(probe)], env=env).returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(TESTS / "gpu"), str(TESTS / "attention" / "test_sdpa.py")],
        env=env, cwd=TESTS.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert " collected" in done.stdout and "error" not in done.stdout.lower(), done.stdout[-4000:]
