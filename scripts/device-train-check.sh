#!/usr/bin/env bash
# Run ON THE GPU MACHINE after scripts/device-build.sh and scripts/device-join-model.sh (docs/gpu.md):
# proves `uio train` on CUDA with SmolLM2-135M (bf16 compute, fp32 adapters and AdamW state) on
# 100K-token documents. STORE is a carried token store (default out/gpu-store, see docs/gpu.md).
#   PART=bench  `uio bench train` at 102,400 tokens: estimators x chunk sizes K x activation checkpointing
#   PART=nccl   the data-parallel path over NCCL on this machine's GPUs (torchrun's variables set by hand):
#               the tiny Qwen2 test model, world size = GPUS (default: all), 20 steps, weights checked
#               equal across ranks every step; needs no model files (build-gpu/testdata)
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
if [ "${PART:-run}" = nccl ]; then
  gpus=${GPUS:-$(nvidia-smi -L | wc -l)}
  export MASTER_ADDR=127.0.0.1 MASTER_PORT=${MASTER_PORT:-29555} WORLD_SIZE=$gpus NCCL_NVLS_ENABLE=0
  rm -rf out/nccl-run
  mkdir -p out/nccl-store
  python3 - out/nccl-store <<'PY'
# A token store of random documents in uio's format (data/token_store.h) for the tiny test model.
import os, random, struct, sys
out = sys.argv[1]; random.seed(0)
docs = [[random.randrange(3, 123) for _ in range(320)] for _ in range(12)]
with open(os.path.join(out, "tokens.bin"), "wb") as f:
    for d in docs: f.write(struct.pack("<%dH" % len(d), *d))
ident = b"nccl-check"
index = b"UIOTOKIX" + struct.pack("<IIQqQQ", 1, 2, 128, 2, len(docs), sum(map(len, docs)))
index += struct.pack("<I", len(ident)) + ident
offset = 0
for i, d in enumerate(docs):
    name = b"doc%d" % i
    index += struct.pack("<QQB", offset, len(d), 1 if i == len(docs) - 1 else 0) + struct.pack("<I", len(name)) + name
    offset += len(d)
with open(os.path.join(out, "index.bin"), "wb") as f: f.write(index)
PY
  pids=()
  for ((r = 0; r < gpus; r++)); do
    RANK=$r LOCAL_RANK=$r "$uio" train --model build-gpu/testdata/hf_models/qwen2_bias --data "${NCCL_STORE:-out/nccl-store}" \
      --device cuda --seq_len 64 --segment_len 16 --num_memory_tokens 4 --encoder_lora_rank 4 --transfer_lora_rank 4 \
      --steps 20 --val_documents 1 --log_every 5 --check_every 1 --checkpoint_every 10 --out_dir out/nccl-run \
      > "$out/nccl-rank$r.log" 2>&1 &
    pids+=($!)
  done
  rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done
  cat "$out/nccl-rank0.log"; exit $rc
fi
[ -f "$model" ] || { echo "device-train-check: no $model; run scripts/device-join-model.sh first"; exit 2; }
STORE=$store bash scripts/device-unpack-store.sh
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
