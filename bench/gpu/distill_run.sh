#!/usr/bin/env bash
# Block distillation on the GPU machine, in one or more device calls.
#
# The default model travels as its GGUF file (98 MB; a call carries at most 64 MiB with the
# working tree's 9.4), xz-compressed (86 MiB) and split in two parts over folders that
# .git/info/exclude ignores: `xz -6 -c <gguf> | split -b 40m -d - gguf.xz.part` (part00 in .gpu-a,
# part01 and part02 in .gpu-b). Each call stashes what it carries on the warm machine; once all parts are
# there the model is converted and the benchmarks run. A committed snapshot of the code without
# its large data files (`git archive HEAD libs services bench | tar -x -C .gpu-libs`, then remove the
# segmenter's weights, the shipped adapter and the committed examples) keeps others' uncommitted
# edits off the device: each call runs `cd .gpu-libs && ln -sfn ../.gpu-a .gpu-a ... && bash
# bench/gpu/distill_run.sh ...`. Back to back (the machine stays warm 30 s):
#   run("... stash", carry=[".whl", ".gpu-a"])
#   run("CF=0.5 EXAMPLES=4000 ... train NAME --steps 460", carry=[".gpu-b", ".gpu-libs"])
#   (the shipped adapter: `train opening-500 --steps 440`, 1.07 s per step of 16; the defaults
#   are its recipe: a shared opening at gap 500, no sinks)
#   (the sinks adapter before it: `train distilled --steps 800 --stop-after 448 --set opening=false
#   --set sink_token="<|endoftext|>"`, 0.94 s per step of 16)
#   run("... train block-fine-tuning --steps 800 --set objective=ce ...")
#   run("DEV_QUESTIONS=100 bash bench/gpu/distill_run.sh score")
# Wheels in .whl/: transformers==5.23.0 and gguf==0.19.0 (README.md of bench/ says how).
set -uo pipefail
OUT=${OUT:-bench/results}
STASH=/root/blockrag-stash
mkdir -p "$STASH"
for d in .gpu .gpu-a .gpu-b .gpu-c; do [ -d $d ] && cp $d/* "$STASH"/; done  # what this call carried
[ -d .whl ] && cp .whl/*.whl "$STASH"/ 2>/dev/null
ls -la "$STASH"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STASH"/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/libs:$PWD/services PYTHONUNBUFFERED=1 BLOCKRAG_HOME=/root/blockrag-home
MODE=${1:-fidelity}; shift || true
prepare_model() {  # converted where load_model() looks for the default model, so fingerprints match the CPU's
  MODEL=$BLOCKRAG_HOME/models/smollm2-135m-instruct
  if [ ! -f "$MODEL/config.json" ]; then
    if ls "$STASH"/gguf.xz.part* > /dev/null 2>&1; then  # xz-compressed parts (8% smaller: two calls carry it)
      cat "$STASH"/gguf.xz.part* | python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)" \
        > "$STASH/SmolLM2-135M-Instruct.Q4_1.gguf" || return 1
    else
      cat "$STASH"/gguf.part* > "$STASH/SmolLM2-135M-Instruct.Q4_1.gguf" || return 1
    fi
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
  train)  # one adapter, alone on the GPU: train NAME [blockrag model distill options], e.g.
          #   train distilled --steps 800
          #   train block-fine-tuning --steps 800 --set objective=ce --set sink_token=null \
          #     --set block_dropout=0 --set token_weighting=0
          # (the previous adapter's run trained two at once: each step ran 3.7x slower than alone).
          # EXAMPLES, QF, CF and FF: the examples' count, question, cloze and fact fractions (default 3000, 0.75, 0, 0: the
          # shipped adapter's, committed in bench/gpu; others are built on the GPU by the first call
          # that names them, the teacher answering 32 prompts at a time: 99 s for those 3,000).
          # SIGTERM at TRAIN_SECONDS: the adapter of the steps done is still written, and the run's
          # state stays in /root/checkpoints/NAME: the same command in the next call (the machine
          # still warm) continues the schedule where it stopped.
    NAME=${1:?train NAME [options]}; shift
    prepare_model || exit 1
    EXAMPLES=${EXAMPLES:-3000}; QF=${QF:-0.75}; CF=${CF:-0}; FF=${FF:-0}
    FILE="$STASH/examples-$EXAMPLES-$QF-$CF-$FF.json.gz"
    [ -f "$FILE" ] || [ "$EXAMPLES-$QF-$CF-$FF" != 3000-0.75-0-0 ] || cp bench/gpu/distill-examples-3000.json.gz "$FILE"
    [ -f "$FILE" ] || [ "$EXAMPLES-$QF-$CF-$FF" != 3000-0.75-0-0.5 ] || cp bench/gpu/distill-examples-facts-3000.json.gz "$FILE"
    BUILT=$([ -f "$FILE" ] && echo no || echo yes)  # built by this call: sent back
    mkdir -p /root/adapters /root/checkpoints
    # a run's state carried back from an earlier session (NAME.ckpt.part*, sent back below):
    # the schedule continues across sessions, not only across calls of one warm machine
    if [ ! -d "/root/checkpoints/$NAME" ] && ls "$STASH/$NAME".ckpt.part* > /dev/null 2>&1; then
      cat "$STASH/$NAME".ckpt.part* | tar -x -C /root/checkpoints && echo "restored /root/checkpoints/$NAME"
    fi
    timeout -s TERM "${TRAIN_SECONDS:-480}" python3 -W ignore -m blockrag.cli.app model distill \
      --examples "$EXAMPLES" --question-fraction "$QF" --cloze-fraction "$CF" --fact-fraction "$FF" --examples-file "$FILE" --device cuda \
      --checkpoint-dir "/root/checkpoints/$NAME" --out "/root/adapters/$NAME.safetensors" "$@" 2>&1 | tee "$OUT/$NAME.log"
    [ "$BUILT" = yes ] && cp "$FILE" "$OUT/" 2>/dev/null  # the examples come back once (a few MB)
    split -b 15m -d "/root/adapters/$NAME.safetensors" "$OUT/$NAME.part"  # join: cat NAME.part*
    # KEEP_STATE=1: the run's state comes back too (NAME.ckpt.part*, 67 MB for the default model:
    # it crowds other files out of the ~64 MB a call returns); carried in .gpu-c, it continues
    # the schedule in a later session
    if [ "${KEEP_STATE:-0}" = 1 ]; then tar -C /root/checkpoints -c "$NAME" | split -b 15m -d - "$OUT/$NAME.ckpt.part"; fi ;;
  score)  # every adapter trained on this machine (SHIPPED=1: and the shipped one): the held-out set in
          # SHARDS processes (default 3; the small model leaves the GPU launch-bound, so more
          # processes finish sooner) and DEV_QUESTIONS of the dev split (for choosing between
          # adapters) in DEV_SHARDS, all at once; one table per split. ADAPTERS_ONLY=1: without
          # the base model's rows; CACHED_FIRST=0: without the rows of the first passage cached.
          # Each shard writes its rows as it goes and stops at SCORE_SECONDS (540), so the tables
          # below still come back, without the rows some shard did not finish
    prepare_model || exit 1
    mkdir -p /root/adapters
    [ "${SHIPPED:-0}" = 1 ] && cp libs/blockrag/distill/default_adapter/adapter.safetensors /root/adapters/shipped.safetensors
    adapters=()
    for a in /root/adapters/*.safetensors; do adapters+=(--adapter "$a"); done
    shards() {  # shards SPLIT QUESTIONS N: N processes in the background
      for ((k = 0; k < $3; k++)); do
        timeout -s TERM "${SCORE_SECONDS:-540}" python3 -W ignore bench/fidelity.py --questions "$2" --split "$1" --shard "$k/$3" \
          "${adapters[@]}" --opening-gap 500 $([ "${CACHED_FIRST:-1}" = 1 ] && echo --cached-first-passage) \
          $([ "${ADAPTERS_ONLY:-0}" = 1 ] && echo --adapters-only) --out "$OUT/$1-shard$k.json" > "$OUT/$1-shard$k.log" 2>&1 &
      done
    }
    shards heldout "${QUESTIONS:-300}" "${SHARDS:-3}"
    [ "${DEV_QUESTIONS:-0}" -gt 0 ] && shards dev "$DEV_QUESTIONS" "${DEV_SHARDS:-1}"
    wait
    tail -n 2 "$OUT"/*-shard*.log
    [ "${DEV_QUESTIONS:-0}" -gt 0 ] && python3 -W ignore bench/fidelity.py --merge "$OUT"/dev-shard*.json --out "$OUT/dev.json"
    python3 -W ignore bench/fidelity.py --merge "$OUT"/heldout-shard*.json --out "$OUT/fidelity.json" ;;
  first-block)  # bench/gpu/first_block_probe.py (its options follow): the first passage read exactly
    prepare_model || exit 1
    python3 -W ignore bench/gpu/first_block_probe.py --out "$OUT/first_block.json" "$@" 2>&1 | tail -n 4 ;;
  fidelity)  # train and score inside bench/fidelity.py (its options follow)
    prepare_model || exit 1
    python3 -W ignore bench/fidelity.py --out "$OUT/fidelity.json" "$@" 2>&1 | tee "$OUT/fidelity.log" ;;
esac
