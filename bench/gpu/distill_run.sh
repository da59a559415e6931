#!/usr/bin/env bash
# Block distillation on the GPU machine, in one or more device calls.
#
# The default model travels as its GGUF file (98 MB, over one call's 64 MiB), split in parts
# under .gpu/ (`split -b 33m -d <gguf> .gpu/gguf.part`); each call stashes the parts it carries
# on the warm machine, and once all are there the model is converted and the benchmarks run.
#   run(command="bash bench/gpu/distill_run.sh [fidelity args]", carry=[".whl", ".gpu"])
# Wheels in .whl/: transformers==5.23.0 and gguf==0.19.0 (README.md of bench/ says how).
set -uo pipefail
OUT=${OUT:-bench/results}
STASH=/root/blockrag-stash
mkdir -p "$STASH"
[ -d .gpu ] && cp .gpu/* "$STASH"/ 2>/dev/null
[ -d .whl ] && cp .whl/*.whl "$STASH"/ 2>/dev/null
ls -la "$STASH"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STASH"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1 BLOCKRAG_HOME=/root/blockrag-home
MODE=${1:-fidelity}; shift || true
case "$MODE" in
  tests)  # GPU tests and the 8B-shape distillation step
    python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu 2>&1 | tail -n 5
    python3 bench/gpu/distill_step.py --out "$OUT" 2>&1 | tail -n 30 ;;
  stash) echo stashed ;;
  fidelity|ship)
    # converted where load_model() looks for the default model, so fingerprints match the CPU's
    MODEL=$BLOCKRAG_HOME/models/smollm2-135m-instruct
    if [ ! -f "$MODEL/config.json" ]; then
      cat "$STASH"/gguf.part* > "$STASH/SmolLM2-135M-Instruct.Q4_1.gguf" || exit 1
      python3 -c "from pathlib import Path; from blockrag.models.default import convert_gguf; convert_gguf(Path('$STASH/SmolLM2-135M-Instruct.Q4_1.gguf'), Path('$MODEL'))" 2>&1 | tail -n 2
    fi
    if [ "$MODE" = ship ]; then
      # train an adapter with the CLI's defaults (plus "$@"), score it on the held-out set, and
      # send it back in parts under $OUT's 16 MiB file limit (join with cat adapter.part*)
      python3 -W ignore -m blockrag.cli.app model distill --device cuda --out /root/adapter.safetensors "$@" 2>&1 | tee "$OUT/distill.log"
      split -b 15m -d /root/adapter.safetensors "$OUT/adapter.part"
      python3 -W ignore bench/fidelity.py --adapter /root/adapter.safetensors --questions 300 --split heldout \
        --out "$OUT/fidelity.json" 2>&1 | tee "$OUT/fidelity.log"
    else
      python3 -W ignore bench/fidelity.py --out "$OUT/fidelity.json" "$@" 2>&1 | tee "$OUT/fidelity.log"
    fi ;;
esac
