#!/usr/bin/env bash
# One device call for segmentation throughput (issue 10): the shipped segmenter and --model
# directories on the GPU, texts and backbone carried in .gpu-seg (made by bench/gpu/segment_kit.py).
#   run(command="bash bench/gpu/segment_run.sh", carry=[".gpu-seg"])
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu-seg/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu-seg/site:$PWD/libs PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
python3 bench/gpu/segment_kit.py --expand || exit 1
python3 bench/segment_throughput.py --data .gpu-seg/texts.jsonl --device cuda --runs 5 --threads 8 \
  --tokenizer .gpu-seg/tok --out "$OUT/segment_throughput-gpu.json" "$@" 2>&1 | tee "$OUT/segment.log"
