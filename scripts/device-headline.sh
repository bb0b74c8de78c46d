#!/usr/bin/env bash
# Run ON THE GPU MACHINE (docs/gpu.md: the tree is copied there, results come back from $OUT): the
# headline run of the README. Needs scripts/device-build.sh done, the model's parts copied over
# (scripts/split-model-for-device.sh: .xfer1, .xfer2) and the packed token store (.xfer-store,
# scripts/pack-store-for-device.sh). The commands that made docs/results.md, each under 10 minutes:
#   UIO_SKIP_TESTS=1 bash scripts/device-build.sh            (with .debs/, .whl/ and .xfer1/ copied over)
#   COMMIT=<hash> PART=train STEPS=280 TRAIN_LIMIT_S=470 bash scripts/device-headline.sh   (.xfer2/, .xfer-store/)
#   COMMIT=<hash> PART=eval bash scripts/device-headline.sh
#   CONFIG=<ini> EXTRA="<train options>" train another recipe (default configs/smollm2-135m-100k.ini as is).
#   PART=train  joins the model, unpacks the store, trains CONFIG for STEPS (its
#               own 300 by default) into out/headline (a SIGTERM from the safety timeout TRAIN_LIMIT_S
#               saves a checkpoint and stops cleanly), exports the compressor to out/headline-export;
#               $OUT/headline-train.tgz: metrics.jsonl, the log, the export's uio_config.json
#   METHODS=uio,truncate PASSKEY_LENGTHS=... ONE_SEGMENT=<l+1> PASSKEY_1M=0 narrow PART=eval for a short call.
#   PART=eval   `uio eval` of out/headline against truncate (the model's own 8,192 window; and 1,025, one
#               segment of uio's plus the token before it, so the first scored token has its predecessor)
#               and the RoPE-scaling baselines: perplexity at 4K..100K, passkey at 8K/32K/100K, needle
#               grid; passkey at 1M for uio and truncate only;
#               $OUT/headline-eval.tgz: the three results.json / results.md, plots, logs
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
uio=${BUILD_DIR:-$root/build-gpu}/uio
out=${OUT:-/tmp}
store=${STORE:-out/gpu-store}
python=${UIO_PYTHON:-/opt/torch/.venv/bin/python3}
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
work=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$work/gpu.txt" || true
# The machine's copy of .git can lag behind the working tree that travels: pass COMMIT from the dev machine.
echo "${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" > "$work/commit.txt"
pack() { tar czf "$out/$1" -C "$work" . && ls -la "$out/$1"; }
case "${PART:-train}" in
train)
  bash scripts/device-join-model.sh
  STORE=$store bash scripts/device-unpack-store.sh
  rm -rf out/headline out/headline-export
  start=$(date +%s)
  steps=()
  [ -n "${STEPS:-}" ] && steps=(--steps "$STEPS")
  # shellcheck disable=SC2086
  timeout -s TERM "${TRAIN_LIMIT_S:-520}" "$uio" train --config "${CONFIG:-configs/smollm2-135m-100k.ini}" \
    --model "$model" --data "$store" "${steps[@]}" --checkpoint_every 50 --out_dir out/headline ${EXTRA:-} 2>&1 |
    tee "$work/train.log" || true
  echo "train wall seconds: $(( $(date +%s) - start ))" | tee -a "$work/train.log"
  cp out/headline/metrics.jsonl "$work/"
  "$uio" export --checkpoint out/headline --out out/headline-export 2>&1 | tee "$work/export.log"
  cp out/headline-export/uio_config.json "$work/"
  du -sh out/headline-export | tee -a "$work/export.log"
  pack headline-train.tgz
  # The export (to commit) and the newest checkpoint (to resume exactly in a later call), each in parts
  # under the 16 MiB a returned file may take.
  tar czf "$out/export.tgz" -C out headline-export && ls -la "$out/export.tgz"
  latest=$(ls -d out/headline/checkpoints/step-* 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$latest" ]; then
    tar cf - -C out/headline checkpoints/"$(basename "$latest")" | split -b 15M -d - "$out/checkpoint.tar.part"
    ls -la "$out"/checkpoint.tar.part*
  fi
  ;;
eval)
  memory=${MEMORY:-out/headline-export}
  common=(--model "$model" --memory "$memory" --data "$store" --device cuda --dtype bfloat16 --score_tokens 1024
          --documents "${DOCUMENTS:-2}" --python "$python")
  # shellcheck disable=SC2086
  timeout -s TERM "${EVAL_LIMIT_S:-330}" "$uio" eval "${common[@]}" --lengths 4096,8192,16384,32768,65536,102400 \
    --passkey_lengths "${PASSKEY_LENGTHS:-8192,32768,102400}" --passkey_trials 2 --needle_lengths 8192,32768,102400 \
    ${METHODS:+--methods $METHODS} --out_dir "$work/main" 2>&1 | tee "$work/eval-main.log" || true
  timeout -s TERM 60 "$uio" eval "${common[@]}" --methods truncate --truncate_window "${ONE_SEGMENT:-1025}" --plot false \
    --lengths 4096,8192,16384,32768,65536,102400 --out_dir "$work/one-segment" 2>&1 | tee "$work/eval-one-segment.log" || true
  if [ "${PASSKEY_1M:-1}" = 1 ]; then
    timeout -s TERM 150 "$uio" eval "${common[@]}" --methods uio,truncate --lengths "" --passkey_lengths 1048576 \
      --passkey_trials 2 --out_dir "$work/passkey-1m" 2>&1 | tee "$work/eval-1m.log" || true
  fi
  pack headline-eval.tgz
  ;;
*) echo "device-headline: PART must be train or eval"; exit 2 ;;
esac
