#!/usr/bin/env bash
# One device call for the serving-speed work (issue 12) and segmentation throughput (issue 10):
# the GPU tests, the decode variants (bench/gpu/decode_profile.py), the concurrency part of
# bench/gpu/run.py and, where .gpu-seg was carried, bench/gpu/segment_run.sh; each part
# time-boxed so that one slow part cannot take the others' figures (TESTS_S, DECODE_S, BATCH_S,
# HOST_S, KERNEL_S (off by default: bench/gpu/attention_kernel.py), SEGMENT_S seconds; 0 skips a
# part; DECODE_CONTEXTS, HOST_CONTEXTS).
#   run(command="bash bench/gpu/serving_run.sh", carry=[".whl", ".gpu-seg"])
set -uo pipefail
export OUT=${OUT:-bench/results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
# one process per file: a device-side assert (it poisons the CUDA context) fails its own file only
timeout "${TESTS_S:-140}" bash -c 'for f in tests/gpu/test_*.py tests/attention/test_sdpa.py; do
  log="$OUT/test-$(basename "$f" .py).log"
  python3 -m pytest -q -m gpu -p no:cacheprovider "$f" > "$log" 2>&1; tail -n 1 "$log" | sed "s|^|$f: |"; done' > "$OUT/gpu-tests.log" 2>&1
cat "$OUT/gpu-tests.log"
# a call returns only a few files: the failures' names and first lines come back in the output
grep -hE "^(FAILED|ERROR) |^E   " "$OUT"/test-*.log 2>/dev/null | head -n 30 | cut -c1-250
[ "${DECODE_S:-140}" != 0 ] && (cd bench/gpu && timeout "${DECODE_S:-140}" python3 decode_profile.py --out "$OUT" --models llama-3.1-8b \
  --variants plain fused --contexts ${DECODE_CONTEXTS:-32768 4096} > "$OUT/decode.log" 2>&1; grep "^{" "$OUT/decode.log" | cut -c1-400)
[ "${BATCH_S:-110}" != 0 ] && (cd bench/gpu && timeout "${BATCH_S:-110}" python3 run.py --out "$OUT" --parts precompute batch --runs 3 --models llama-3.1-8b \
  > "$OUT/batch.log" 2>&1; grep -E " (batch|precompute) " "$OUT/batch.log" | cut -c1-400; tail -n 1 "$OUT/batch.log" | cut -c1-300)
[ "${HOST_S:-70}" != 0 ] && (cd bench/gpu && timeout "${HOST_S:-70}" python3 run.py --out "$OUT/host" --parts host --runs 5 --models llama-3.1-8b \
  --contexts ${HOST_CONTEXTS:-4096 32768} > "$OUT/host.log" 2>&1; grep " host " "$OUT/host.log" | cut -c1-500; tail -n 1 "$OUT/host.log" | cut -c1-300)
[ "${KERNEL_S:-0}" != 0 ] && (cd bench/gpu && timeout "${KERNEL_S}" python3 attention_kernel.py --out "$OUT" > "$OUT/kernel.log" 2>&1; cut -c1-260 "$OUT/kernel.log" | grep "^{")
if [ -d .gpu-seg ] && [ "${SEGMENT_S:-85}" != 0 ]; then
  timeout "${SEGMENT_S:-85}" bash bench/gpu/segment_run.sh --runs 3 > "$OUT/segment.log" 2>&1; tail -n 12 "$OUT/segment.log"
fi
