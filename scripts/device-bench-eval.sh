#!/usr/bin/env bash
# Run ON THE GPU MACHINE after scripts/device-build.sh (and, for SmolLM2 and eval, scripts/device-join-model.sh
# and a carried token store, docs/gpu.md): the GPU half of `uio bench` and `uio eval`.
#   PART=bench  `uio bench train` with --compare_python (the eager HF + PEFT step beside it) for the shapes
#               in SHAPES (default: smollm2-135m llama2-7b llama3-8b, random weights) at TOKENS, chunk sizes
#               CHUNKS, checkpointing off/on; tables to $OUT/bench-<shape>.txt
#   PART=table  the table of docs/benchmarks.md with fixed settings and a time limit per shape
#   PART=fast   the fused kernels against the reference kernels (`--kernels reference,fused`), same binary,
#               same run: FAST=tests runs their GPU tests; FAST=135m profiles and times the 135M shape at
#               8K-100K beside the eager step; FAST=7b the 7B shape at 32K-100K beside the eager step;
#               FAST=1m the 135M shape at 1M tokens (peak memory against length)
#   PART=eval   `uio eval` of the compressor in MEMORY (a checkpoint, export or compressor directory) on
#               SmolLM2 against truncate and the RoPE-scaling baselines; results.json/md and plots to $OUT
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
uio=${BUILD_DIR:-$root/build-gpu}/uio
out=${OUT:-/tmp}
python=${UIO_PYTHON:-/opt/torch/.venv/bin/python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
case "${PART:-bench}" in
bench)
  for shape in ${SHAPES:-smollm2-135m llama2-7b llama3-8b}; do
    "$uio" bench train --shape "$shape" --device cuda --dtype bfloat16 --tokens "${TOKENS:-8192,32768,102400}" \
      --estimators "${ESTIMATORS:-unbiased}" --chunks "${CHUNKS:-1,4,16}" --checkpointing "${CKPT:-off,on}" \
      --encoder_lora_rank "${RANK:-32}" --transfer_lora_rank "${RANK:-32}" --steps "${STEPS:-2}" \
      --compare_python --python "$python" 2>&1 | tee "$out/bench-$shape.txt"
  done
  ;;
table)  # the benchmark table in one call (about 7 minutes after the build): a profile of one step for the
        # 7B and 135M shapes, then 7B at 8K-100K, the 135M shape at 8K-1M, 8B at 32K-100K, with the eager step
  b() { local name=$1 limit=$2; shift 2
        timeout -s KILL "$limit" "$uio" bench train --device cuda --dtype bfloat16 --estimators unbiased --steps 1 \
          --encoder_lora_rank 32 --transfer_lora_rank 32 --python "$python" "$@" 2>&1 | tee "$out/bench-$name.txt" || true; }
  b profile 120 --shape llama2-7b --tokens 32768 --chunks 4 --checkpointing off --profile
  b profile-135m 60 --shape smollm2-135m --tokens 102400 --chunks 32 --checkpointing off --profile
  b llama2-7b "${LIMIT_7B:-160}" --shape llama2-7b --tokens 8192,32768,102400 --chunks 8 --checkpointing on,off --compare_python
  b smollm2-135m "${LIMIT_135M:-130}" --shape smollm2-135m --tokens 8192,32768,102400,1048576 --chunks 32 \
    --checkpointing on,off --compare_python
  b llama3-8b "${LIMIT_8B:-100}" --shape llama3-8b --tokens 32768,102400 --chunks 8 --checkpointing on --compare_python
  ;;
fast)
  b() { local name=$1 limit=$2; shift 2
        timeout -s KILL "$limit" "$uio" bench train --device cuda --dtype bfloat16 --estimators unbiased --steps 1 \
          --kernels reference,fused --encoder_lora_rank 32 --transfer_lora_rank 32 --python "$python" "$@" 2>&1 |
          tee "$out/fast-$name.txt" || true; }
  for part in ${FAST:-tests 135m 7b 1m}; do
    case $part in
    tests) (cd "${BUILD_DIR:-$root/build-gpu}" && ctest --output-on-failure -j 2 \
              -R "FusedKernels|SharedPrefix|LinearCross|Estimator|Generate|Llama|Memory|Recompute" 2>&1 |
              tee "$out/fast-tests.txt" | tail -30) ;;
    135m) b profile-135m 90 --shape smollm2-135m --tokens 102400 --chunks 32 --checkpointing off --profile
          b smollm2-135m 150 --shape smollm2-135m --tokens 8192,32768,102400 --chunks 32 --checkpointing off \
            --compare_python ;;
    7b) b llama2-7b "${LIMIT_7B:-240}" --shape llama2-7b --tokens 32768,102400 --chunks 4 --checkpointing off \
          --compare_python ;;
    1m) b smollm2-135m-1m "${LIMIT_1M:-240}" --shape smollm2-135m --tokens 32768,1048576 --chunks 32 \
          --checkpointing on ;;
    esac
  done
  ;;
eval)
  [ -n "${MEMORY:-}" ] || { echo "device-bench-eval: set MEMORY to a checkpoint, export or compressor directory"; exit 2; }
  "$uio" eval --model models/SmolLM2-135M-Instruct.Q4_1.gguf --memory "$MEMORY" --data "${STORE:-out/gpu-store}" \
    --device cuda --dtype bfloat16 --lengths "${LENGTHS:-4096,8192,16384,32768,65536,102400}" --score_tokens 1024 \
    --documents "${DOCUMENTS:-2}" --passkey_lengths "${PASSKEY:-8192,32768,102400}" --passkey_trials 2 \
    --needle_lengths "${NEEDLE:-8192,32768}" --python "$python" --out_dir "$out/eval" 2>&1 | tee "$out/eval.log"
  ;;
*) echo "device-bench-eval: PART must be bench, table, fast or eval"; exit 2 ;;
esac
