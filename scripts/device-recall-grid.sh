#!/usr/bin/env bash
# Run ON THE GPU MACHINE (docs/gpu.md; model and store in place: scripts/device-join-model.sh,
# scripts/device-unpack-store.sh): does memory learn to carry a number across segment boundaries, and
# what stops it? Each row trains SmolLM2-135M on documents of 2l tokens (two segments; a row may set seq_len),
# half natural text and half cued retrieval documents whose facts all lie at least l tokens before the end
# (so every last answer comes through memory), then `uio eval` asks ROW's own kind of question over held-out
# text (RETRIEVAL_TRIALS prompts of the row's document length, facts as far back, numbers of the row's
# digits; PASSKEY=8192,... adds the passkey at those lengths), for `uio` and, once per kind of prompt, for
# the plain model reading the whole prompt (the in-window ceiling). A curriculum's stages chain through
# --init_memory rows (FROM, EXTRA below; the machine stays warm between calls, so out/ carries over).
# Short documents leave the GPU waiting on the host (issue 17's launch gaps), so the rows run at the same
# time, one process each (ROWS picks them; all by default). Each row trains until TRAIN_LIMIT_S or STEPS.
# Everything lands in $OUT/recall-grid.tgz (logs, metrics, results, the exports' configs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
uio=${BUILD_DIR:-$root/build-gpu}/uio
out=${OUT:-/tmp}
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
work=$(mktemp -d)
echo "${COMMIT:-unknown}" > "$work/commit.txt"
# name -> "l ratio min_digits max_digits [--key=value ...]"; a row's keys replace the defaults (below: a
# 4-token sink (kept as the default so that the documented runs reproduce; it stops memory from learning
# recall, docs/memory.md: EXTRA="--sink_tokens=0" for new stages), half the documents cued retrieval documents with one question about one of 1-2 facts, lr 1e-3,
# two documents per step) or add to them.
# FROM=best: the row among FROM_ROWS whose compressor recalled most in its own evaluation (an earlier call's).
if [ "${FROM:-}" = best ]; then
  FROM=$(python3 - ${FROM_ROWS:-} <<'PY'
import json, sys
best = (-1, "")
for name in sys.argv[1:]:
    try:
        rows = json.load(open("out/grid-eval/%s/results.json" % name))["retrieval"]
    except (OSError, ValueError, KeyError):
        continue
    correct = sum(r.get("correct") or 0 for r in rows if r["method"] == "uio")
    best = max(best, (correct, name))
print(best[1])
PY
)
  [ -n "$FROM" ] || { echo "recall-grid: FROM=best found no evaluated row among FROM_ROWS (${FROM_ROWS:-})"; exit 2; }
  echo "recall-grid: the next stage starts from $FROM" | tee "$work/from.txt"
fi
declare -A rows=(
  [l128-d2]="128 8 2 2"
  [l128-d4]="128 8 4 7"
  [l128-d2-wide]="128 8 2 2 --encoder_lora_targets=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
  [l128-d2-dlora]="128 8 2 2 --decoder_lora_rank=16 --decoder_lora_alpha=32"
  [l1024-d2]="1024 8 2 2"
  [l64-d2-r4]="64 4 2 2"
  [l64-d4-r4]="64 4 4 7"
  [l64-d2-r8]="64 8 2 2"
  [l64-d2-r4-wide]="64 4 2 2 --encoder_lora_targets=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
  [l128-d2-r4]="128 4 2 2"
  [l256-d2-r4]="256 4 2 2"
  # A segment-length curriculum's second stage: from row l64-d2-r4's compressor, which an EARLIER call must
  # have trained (a row rewrites its export when it runs, so these cannot run beside it).
  [c128-r4]="128 4 2 2 --init_memory=out/grid-l64-d2-r4-export"
  [c128-r8]="128 8 2 2 --init_memory=out/grid-l64-d2-r4-export"
  # More answers per second at l = 64 (the first stage's lever, issue 17's host gaps cap steps per second):
  # every document a retrieval document (two questions do not fit 128 tokens); a larger step size; four documents per step;
  # no sink (does the sink take the attention, and so the gradient, that memory needs?).
  [l64-dense]="64 4 2 2 --retrieval_share=1"
  [l64-dense-lr3]="64 4 2 2 --retrieval_share=1 --lr=3e-3"
  [l64-lr3]="64 4 2 2 --lr=3e-3"
  [l64-acc4]="64 4 2 2 --accumulation=4 --lr=2e-3"
  [l64-nosink]="64 4 2 2 --sink_tokens=0"
  # The next stages from the row named by FROM (default l64-dense), which an earlier call trained.
  [s128]="128 4 2 2 --init_memory=out/grid-${FROM:-l64-dense}-export"
  [s128-dense]="128 4 2 2 --retrieval_share=1 --init_memory=out/grid-${FROM:-l64-dense}-export"
  [s256-dense]="256 4 2 2 --retrieval_share=1 --retrieval_questions=2 --init_memory=out/grid-${FROM:-s128-dense}-export"
  [s512-dense]="512 4 2 2 --retrieval_share=1 --retrieval_questions=2 --init_memory=out/grid-${FROM:-s128-dense}-export"
  [s1024-r8]="1024 8 2 2 --init_memory=out/grid-${FROM:-s128-dense}-export"
  # Past the first boundary: from the l = 1,024 stage (FROM, default s1024-r8; EXTRA="--sink_tokens=0"),
  # numbers of the passkey's length (5 digits), and facts up to 7 segments back in 8-segment documents.
  [s1024-d5]="1024 8 5 5 --init_memory=out/grid-${FROM:-s1024-r8}-export"
  [s1024-far]="1024 8 2 2 --seq_len=8192 --chunk=8 --accumulation=1 --init_memory=out/grid-${FROM:-s1024-r8}-export"
  [s1024-far-d5]="1024 8 5 5 --seq_len=8192 --chunk=8 --accumulation=1 --init_memory=out/grid-${FROM:-s1024-r8}-export"
)
run_row() {
  local name=$1 spec=${rows[$1]}
  read -r l ratio dmin dmax extra <<< "$spec"
  # RESUME=1 continues a row's run from its last checkpoint (the machine still warm) instead of starting over.
  local resume=()
  if [ "${RESUME:-0}" = 1 ] && [ -d "out/grid-$name/checkpoints" ]; then resume=(--resume auto); else rm -rf "out/grid-$name"; fi
  rm -rf "out/grid-$name-export" "out/grid-eval/$name"
  local start; start=$(date +%s)
  local -A keys=([steps]="${STEPS:-5000}" [seq_len]=$((2 * l)) [segment_len]="$l" [compression_ratio]="$ratio" [chunk]=2
    [accumulation]=2 [sink_tokens]=4 [retrieval_share]=0.5 [retrieval_questions]=1 [retrieval_max_facts]=2
    [retrieval_min_distance]="$l" [retrieval_cue]=true [retrieval_min_digits]="$dmin" [retrieval_max_digits]="$dmax"
    [lr]="${LR:-1e-3}" [weight_decay]=0 [val_documents]=0 [log_every]=25 [checkpoint_every]=500 [out_dir]="out/grid-$name")
  local kv
  for kv in $extra ${EXTRA:-}; do kv=${kv#--}; keys[${kv%%=*}]=${kv#*=}; done  # EXTRA: keys for every row
  local args=()
  for kv in "${!keys[@]}"; do args+=("--$kv=${keys[$kv]}"); done
  echo "$name: ${args[*]}" >> "$work/rows.txt"
  timeout -s TERM "${TRAIN_LIMIT_S:-300}" "$uio" train --config configs/smollm2-135m-32k.ini "${args[@]}" "${resume[@]}" \
    > "$work/train-$name.log" 2>&1 || true
  echo "$name: train $(($(date +%s) - start)) s, $(grep -c '"loss"' "out/grid-$name/metrics.jsonl" 2>/dev/null) log lines" \
    >> "$work/summary.txt"
  cp "out/grid-$name/metrics.jsonl" "$work/metrics-$name.jsonl" 2>/dev/null || true
  "$uio" export --checkpoint "out/grid-$name" --out "out/grid-$name-export" > "$work/export-$name.log" 2>&1 || return 0
  cp "out/grid-$name-export/uio_config.json" "$work/config-$name.json" 2>/dev/null || true
  # EXPORTS names rows whose trained compressor comes back too (about 12 MB each, compressed)
  case " ${EXPORTS:-} " in *" $name "*) tar czf "$out/export-$name.tgz" -C "out/grid-$name-export" . ;; esac
  ask "$name" $(prompt_of "$name") --methods uio --memory "out/grid-$name-export"
}
# prompt_of NAME: "length distance min_digits max_digits max_facts" of the row's evaluation prompts, the
# documents it trained on: seq_len tokens (2l unless the row sets it), facts retrieval_min_distance back.
prompt_of() {
  local l ratio dmin dmax extra kv
  read -r l ratio dmin dmax extra <<< "${rows[$1]}"
  local -A k=([seq_len]=$((2 * l)) [retrieval_min_distance]="$l" [retrieval_max_facts]=2)
  for kv in $extra ${EXTRA:-}; do kv=${kv#--}; k[${kv%%=*}]=${kv#*=}; done
  echo "${k[seq_len]} ${k[retrieval_min_distance]} $dmin $dmax ${k[retrieval_max_facts]}"
}
# ask TAG length distance min_digits max_digits max_facts METHOD-ARGS...: RETRIEVAL_TRIALS cued prompts of
# `length` tokens over held-out text, every fact at least `distance` tokens before the answer, results in
# $work/eval-TAG.
ask() {
  local tag=$1 length=$2 distance=$3 dmin=$4 dmax=$5 facts=$6
  shift 6
  timeout -s TERM "${EVAL_LIMIT_S:-120}" "$uio" eval --model "$model" --data out/gpu-store --device cuda \
    --dtype bfloat16 "$@" --lengths "" --passkey_lengths "${PASSKEY:-}" --needle_lengths "" --retrieval_lengths "$length" \
    --retrieval_distance "$distance" --retrieval_cue true --retrieval_max_facts "$facts" --retrieval_min_digits "$dmin" \
    --retrieval_max_digits "$dmax" --retrieval_trials "${RETRIEVAL_TRIALS:-40}" --documents 2 --plot false \
    --out_dir "out/grid-eval/$tag" > "$work/eval-$tag.log" 2>&1 || true
  cp -r "out/grid-eval/$tag" "$work/eval-$tag" 2>/dev/null || true
}
ceiling() {  # the plain model reading the whole prompt: the same prompts, answered in its window
  local length=$1 distance=$2 dmin=$3 dmax=$4 facts=$5 tag
  tag="truncate-l$distance-d$dmin-$dmax"  # the name earlier runs used for 2l-token prompts with 2 facts
  [ "$length" = $((2 * distance)) ] && [ "$facts" = 2 ] || tag="truncate-n$length-l$distance-d$dmin-$dmax-f$facts"
  ask "$tag" "$@" --methods truncate
}
names=${ROWS:-${!rows[*]}}
for name in $names; do
  [ -n "${rows[$name]+set}" ] || { echo "recall-grid: unknown row $name" | tee -a "$work/summary.txt"; continue; }
  run_row "$name" &
done
if [ "${BASELINES:-1}" = 1 ]; then
  declare -A seen=()
  for name in $names; do
    [ -n "${rows[$name]+set}" ] || continue
    prompt=$(prompt_of "$name")
    [ -n "${seen[$prompt]+set}" ] && continue
    seen[$prompt]=1
    # shellcheck disable=SC2086
    ceiling $prompt
  done
fi
wait
for f in "$work"/eval-*/results.json; do
  [ -f "$f" ] || continue
  python3 - "$f" >> "$work/summary.txt" <<'PY'
import json, os, sys
rows = json.load(open(sys.argv[1]))["retrieval"]
name = os.path.basename(os.path.dirname(sys.argv[1]))
print(name + ": " + " ".join("%s %s/%s (%s)" % (r["method"], r.get("correct", "-"), r["trials"], r["status"]) for r in rows))
PY
done
cat "$work/summary.txt"
tar czf "$out/recall-grid.tgz" -C "$work" . && ls -la "$out/recall-grid.tgz"
