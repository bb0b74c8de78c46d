#!/usr/bin/env bash
# Run ON THE GPU MACHINE (docs/gpu.md; model and store in place: scripts/device-join-model.sh,
# scripts/device-unpack-store.sh): the memory ablation at equal token budget. Each row trains
# configs/smollm2-135m-32k.ini with the row's overrides for STEPS steps of 32K-token documents, exports
# the compressor, and evaluates it with `uio eval`: perplexity of the last 1,024 tokens at 8K and 32K,
# passkey retrieval at 8K and 32K (5 depths x TRIALS keys), and the needle grid at 8K (depth 1 puts the
# needle in the question's own segment), and retrieval in the training's own synthetic formats over held-out
# text at 8K and 32K (10 prompts each; LENGTHS, PASSKEY_LENGTHS, NEEDLE_LENGTHS, RETRIEVAL_LENGTHS, RETRIEVAL_TRIALS
# RETRIEVAL_DISTANCE and RETRIEVAL_CUE change the evaluation, an empty list drops its test). ROWS picks rows by name; the truncate baseline (the model's
# own 8K window) is evaluated once. Everything lands in $OUT/ablation.tgz (logs, metrics, results).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
uio=${BUILD_DIR:-$root/build-gpu}/uio
out=${OUT:-/tmp}
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
steps=${STEPS:-150}
work=$(mktemp -d)
echo "${COMMIT:-unknown}" > "$work/commit.txt"
declare -A rows=(
  [baseline]=""
  [sink]="--sink_tokens 4"
  [ratio8]="--compression_ratio 8"
  [seg4096]="--segment_len 4096 --chunk 8"
  [retrieval]="--retrieval_share 0.3"
  [sink-retrieval]="--sink_tokens 4 --retrieval_share 0.3"
  [sink-retrieval-ae]="--sink_tokens 4 --retrieval_share 0.3 --autoencode_share 0.1"
  [tbptt]="--estimator tbptt"
  [dlora]="--sink_tokens 4 --decoder_lora_rank 16 --decoder_lora_alpha 32"
  [qa]="--sink_tokens 4 --retrieval_share 0.5 --retrieval_questions 16 --retrieval_max_facts 8"
  [qa-dlora]="--sink_tokens 4 --retrieval_share 0.5 --retrieval_questions 16 --retrieval_max_facts 8 --decoder_lora_rank 16 --decoder_lora_alpha 32"
  [qa-ratio8-dlora]="--sink_tokens 4 --retrieval_share 0.5 --retrieval_questions 16 --retrieval_max_facts 8 --decoder_lora_rank 16 --decoder_lora_alpha 32 --compression_ratio 8"
  [seg4096-sink-dlora]="--segment_len 4096 --chunk 8 --sink_tokens 4 --decoder_lora_rank 16 --decoder_lora_alpha 32"
  # Recall across one segment boundary first (docs/memory.md, "A curriculum"): 2-segment documents, every one a
  # retrieval document whose facts lie in the first segment (its last question is answered through memory
  # only), 4 documents per step; then the long documents, starting from the short stage's compressor.
  [near]="--seq_len 2048 --chunk 2 --accumulation 4 --sink_tokens 4 --retrieval_share 1 --retrieval_questions 4 --retrieval_min_distance 1024"
  [near-ratio8]="--seq_len 2048 --chunk 2 --accumulation 4 --sink_tokens 4 --retrieval_share 1 --retrieval_questions 4 --retrieval_min_distance 1024 --compression_ratio 8"
  [near-ratio8-dlora]="--seq_len 2048 --chunk 2 --accumulation 4 --sink_tokens 4 --retrieval_share 1 --retrieval_questions 4 --retrieval_min_distance 1024 --compression_ratio 8 --decoder_lora_rank 16 --decoder_lora_alpha 32"
  [near-mix]="--seq_len 2048 --chunk 2 --accumulation 2 --sink_tokens 4 --retrieval_share 0.5 --retrieval_questions 4 --retrieval_min_distance 1024"
  [near-cue]="--seq_len 2048 --chunk 2 --accumulation 2 --sink_tokens 4 --retrieval_share 0.5 --retrieval_questions 4 --retrieval_min_distance 1024 --retrieval_cue"
  [near-cue-ratio8]="--seq_len 2048 --chunk 2 --accumulation 2 --sink_tokens 4 --retrieval_share 0.5 --retrieval_questions 4 --retrieval_min_distance 1024 --retrieval_cue --compression_ratio 8"
  [ae-near]="--seq_len 2048 --chunk 2 --accumulation 2 --sink_tokens 4 --autoencode_share 0.5"
  [far-ratio8]="--init_memory out/ablation-near-ratio8-export --compression_ratio 8 --sink_tokens 4 --retrieval_share 0.5 --retrieval_questions 16 --retrieval_max_facts 8"
  [far]="--init_memory out/ablation-near-export --sink_tokens 4 --retrieval_share 0.5 --retrieval_questions 16 --retrieval_max_facts 8"
)
eval_args=(--model "$model" --data out/gpu-store --device cuda --dtype bfloat16 --score_tokens 1024 --documents 2
           --lengths "${LENGTHS-8192,32768}" --passkey_lengths "${PASSKEY_LENGTHS-8192,32768}" --passkey_trials "${TRIALS:-2}"
           --needle_lengths "${NEEDLE_LENGTHS-8192}" --needle_depths 0,0.5,1
           --retrieval_lengths "${RETRIEVAL_LENGTHS-8192,32768}" --retrieval_trials "${RETRIEVAL_TRIALS:-10}"
           --retrieval_distance "${RETRIEVAL_DISTANCE:-0}" --retrieval_cue "${RETRIEVAL_CUE:-false}" --plot false)
for name in ${ROWS:-baseline sink}; do
  [ -n "${rows[$name]+set}" ] || { echo "ablation: unknown row $name"; continue; }
  rm -rf "out/ablation-$name" "out/ablation-$name-export" "out/ablation-eval/$name"
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout -s TERM "${TRAIN_LIMIT_S:-200}" "$uio" train --config configs/smollm2-135m-32k.ini --steps "$steps" \
    --out_dir "out/ablation-$name" ${rows[$name]} > "$work/train-$name.log" 2>&1 || true
  echo "$name: train $(( $(date +%s) - start )) s" | tee -a "$work/summary.txt"
  tail -5 "$work/train-$name.log" | tee -a "$work/summary.txt"
  cp "out/ablation-$name/metrics.jsonl" "$work/metrics-$name.jsonl" 2>/dev/null || true
  "$uio" export --checkpoint "out/ablation-$name" --out "out/ablation-$name-export" > /dev/null 2>&1 || continue
  timeout -s TERM "${EVAL_LIMIT_S:-120}" "$uio" eval "${eval_args[@]}" --methods uio --memory "out/ablation-$name-export" \
    --out_dir "out/ablation-eval/$name" > "$work/eval-$name.log" 2>&1 || true
  cp -r "out/ablation-eval/$name" "$work/eval-$name" 2>/dev/null || true
  grep -A4 "^### " "$work/eval-$name/results.md" 2>/dev/null | tee -a "$work/summary.txt" || true
done
if [ "${BASELINES:-1}" = 1 ]; then
  # truncate at the model's own window, and to one segment (1,025 tokens: is a needle in the question's own
  # segment found without any memory before it?)
  timeout -s TERM 120 "$uio" eval "${eval_args[@]}" --methods truncate --out_dir out/ablation-eval/truncate \
    > "$work/eval-truncate.log" 2>&1 || true
  timeout -s TERM 60 "$uio" eval "${eval_args[@]}" --methods truncate --truncate_window 1025 --passkey_lengths "" \
    --out_dir out/ablation-eval/truncate-1025 > "$work/eval-truncate-1025.log" 2>&1 || true
  cp -r out/ablation-eval/truncate "$work/eval-truncate"; cp -r out/ablation-eval/truncate-1025 "$work/eval-truncate-1025" || true
  grep -A4 "^### " "$work/eval-truncate/results.md" "$work/eval-truncate-1025/results.md" 2>/dev/null |
    tee -a "$work/summary.txt" || true
fi
tar czf "$out/ablation.tgz" -C "$work" . && ls -la "$out/ablation.tgz"
