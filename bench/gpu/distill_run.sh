#!/usr/bin/env bash
# Block distillation on the GPU machine, in one or more device calls.
#
# The default model travels as its GGUF file (98 MB, over one call's 64 MiB), split in parts
# (`split -b 44m -d <gguf> gguf.part`) over folders that .git/info/exclude ignores (.gpu, .gpu-a,
# .gpu-b); each call stashes what it carries on the warm machine, and once all parts are there
# the model is converted and the benchmarks run. The shipped adapter's run, three calls:
#   run("bash bench/gpu/distill_run.sh probe", carry=[".whl", ".gpu-a"])   # gguf.part00
#   run("bash bench/gpu/distill_run.sh train", carry=[".gpu-b"])  # gguf.part01-02, examples.json.gz
#   run("bash bench/gpu/distill_run.sh score")
# Wheels in .whl/: transformers==5.23.0 and gguf==0.19.0 (README.md of bench/ says how).
set -uo pipefail
OUT=${OUT:-bench/results}
STASH=/root/blockrag-stash
mkdir -p "$STASH"
for d in .gpu .gpu-a .gpu-b; do [ -d $d ] && cp $d/* "$STASH"/; done  # what this call carried
[ -d .whl ] && cp .whl/*.whl "$STASH"/ 2>/dev/null
ls -la "$STASH"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STASH"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/libs PYTHONUNBUFFERED=1 BLOCKRAG_HOME=/root/blockrag-home
MODE=${1:-fidelity}; shift || true
prepare_model() {  # converted where load_model() looks for the default model, so fingerprints match the CPU's
  MODEL=$BLOCKRAG_HOME/models/smollm2-135m-instruct
  if [ ! -f "$MODEL/config.json" ]; then
    cat "$STASH"/gguf.part* > "$STASH/SmolLM2-135M-Instruct.Q4_1.gguf" || return 1
    python3 -c "from pathlib import Path; from blockrag.models.default import convert_gguf; convert_gguf(Path('$STASH/SmolLM2-135M-Instruct.Q4_1.gguf'), Path('$MODEL'))" 2>&1 | tail -n 2
  fi
}
case "$MODE" in
  tests)  # GPU tests and the 8B-shape distillation step
    python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu 2>&1 | tail -n 5
    python3 bench/gpu/distill_step.py --out "$OUT" 2>&1 | tail -n 30 ;;
  stash) echo stashed ;;
  probe)  # step time of the default model's shape, one example per forward against one batch
    python3 bench/gpu/distill_batch.py --runs 6 --warmup 2 --out "$STASH" 2>&1 | tee "$OUT/probe.log"
    cp "$STASH/distill_batch.json" "$OUT/" ;;
  train)  # the shipped adapter and block fine-tuning at equal steps, side by side on the GPU;
          # steps from the probe's batched step time so both finish in the call (else SIGTERM:
          # each writes the adapter of the steps it did)
    prepare_model || exit 1
    STEPS=$(python3 -c "import json; r = json.load(open('$STASH/distill_batch.json'))['rows']
print(max(50, min(${MAX_STEPS:-800}, int(${TRAIN_SECONDS:-420} / (1.5 * r['distillation, micro_batch 8']['step_s'])))))")
    echo "steps: $STEPS"
    mkdir -p /root/adapters
    common=(--examples "${EXAMPLES:-1200}" --steps "$STEPS" --examples-file "$STASH/examples.json.gz" --device cuda)
    timeout -s TERM $((${TRAIN_SECONDS:-420} + 60)) python3 -W ignore -m blockrag.cli.app model distill "${common[@]}" \
      --out /root/adapters/distilled.safetensors > "$OUT/distilled.log" 2>&1 &
    timeout -s TERM $((${TRAIN_SECONDS:-420} + 60)) python3 -W ignore -m blockrag.cli.app model distill "${common[@]}" \
      --set objective=ce --set sink_token=null --set block_dropout=0 --set token_weighting=0 \
      --out /root/adapters/block-fine-tuning.safetensors > "$OUT/block-fine-tuning.log" 2>&1 &
    wait
    tail -n 4 "$OUT"/distilled.log "$OUT"/block-fine-tuning.log
    split -b 15m -d /root/adapters/distilled.safetensors "$OUT/adapter.part" ;;
  score)  # the held-out table: three shards at once, then one table
    for k in 0 1 2; do
      python3 -W ignore bench/fidelity.py --questions "${QUESTIONS:-300}" --split heldout --shard $k/3 \
        --adapter /root/adapters/distilled.safetensors --adapter /root/adapters/block-fine-tuning.safetensors \
        --out "$OUT/shard$k.json" > "$OUT/shard$k.log" 2>&1 &
    done
    wait
    tail -n 3 "$OUT"/shard*.log
    python3 -W ignore bench/fidelity.py --merge "$OUT"/shard*.json --out "$OUT/fidelity.json" ;;
  fidelity|ship)
    prepare_model || exit 1
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
