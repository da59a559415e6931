#!/usr/bin/env bash
# One device call: install the carried wheels, run the GPU tests, then the benchmark.
#   run(command="bash bench/gpu/device_run.sh", carry=[".whl"])
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/nvidia-smi.txt"
# one process per file: a device-side assert (it poisons the CUDA context) fails its own file only
for f in tests/gpu/test_*.py tests/attention/test_sdpa.py; do
  python3 -m pytest -q -m gpu -p no:cacheprovider "$f" 2>&1 | tee -a "$OUT/gpu-tests.log" | tail -n 1 | sed "s|^|$f: |"
done
python3 bench/gpu/run.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
if [ -n "${PROFILE_DECODE:-}" ]; then  # where a graphed decode step's time goes (bench/gpu/decode_profile.py)
  (cd bench/gpu && python3 decode_profile.py --out "$OUT" 2>&1 | tee "$OUT/decode_profile.log")
fi
