#!/usr/bin/env bash
# Run ON THE GPU MACHINE after scripts/device-build.sh and scripts/device-join-model.sh (docs/gpu.md):
# proves `uio train` on CUDA with SmolLM2-135M (bf16 compute, fp32 adapters and AdamW state) on
# 100K-token documents. STORE is a carried token store (default out/gpu-store, see docs/gpu.md).
#   PART=bench  `uio bench train` at 102,400 tokens: estimators x chunk sizes K x activation checkpointing
#   PART=run    STEPS (200) steps of configs/smollm2-135m-100k.ini (unbiased, S = 2) with held-out
#               perplexity before and after and a checkpoint every 100 steps; then 5 more steps resumed
#               from the last checkpoint (--resume auto), proving CUDA checkpoints load
# Logs, metrics.jsonl and tables go to $OUT.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
uio=${BUILD_DIR:-$root/build-gpu}/uio
store=${STORE:-out/gpu-store}
out=${OUT:-/tmp}
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || { echo "device-train-check: no $model; run scripts/device-join-model.sh first"; exit 2; }
if [ ! -f "$store/index.bin" ] && [ -f .xfer-store/tokens.bin.xz ]; then  # packed by scripts/pack-store-for-device.sh
  mkdir -p "$store" && cp .xfer-store/index.bin "$store/"
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"), 1 << 22)' \
    .xfer-store/tokens.bin.xz "$store/tokens.bin"
fi
[ -f "$store/index.bin" ] || { echo "device-train-check: no token store at $store; carry it (docs/gpu.md)"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

case "${PART:-run}" in
bench)
  "$uio" bench train --model "$model" --tokens "${TOKENS:-102400}" --estimators "${ESTIMATORS:-unbiased,full}" \
    --chunks "${CHUNKS:-1,8,32,100}" --checkpointing "${CKPT:-off,on}" --steps 2 2>&1 | tee "$out/bench-train.txt"
  ;;
run)
  steps=${STEPS:-200}
  rm -rf out/gpu-run
  "$uio" train --config configs/smollm2-135m-100k.ini --model "$model" --data "$store" --steps "$steps" \
    --val_documents "${VAL:-2}" --val_every 0 --log_every 1 --checkpoint_every 100 --out_dir out/gpu-run 2>&1 |
    tee "$out/train.log"
  "$uio" train --config configs/smollm2-135m-100k.ini --model "$model" --data "$store" --steps $((steps + 5)) \
    --val_documents 0 --log_every 1 --checkpoint_every 100 --out_dir out/gpu-run --resume auto 2>&1 |
    tee "$out/resume.log"
  cp out/gpu-run/metrics.jsonl "$out/metrics.jsonl"
  ;;
*) echo "device-train-check: PART must be bench or run"; exit 2 ;;
esac
