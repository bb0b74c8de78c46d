#!/usr/bin/env bash
# tests/recall_grid_script_test.sh — scripts/device-recall-grid.sh against a stub `uio` (no GPU, no model): a
# row's keys replace the defaults and EXTRA's replace both, every row and ceiling asks prompts of the row's
# own documents, FROM=best picks the row whose evaluation recalled most, and the results come back in the
# archive. GPU calls are scarce; a script error found here costs none of them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "recall-grid script: $*" >&2; exit 1; }

# The stub logs every call and leaves what the script reads back: metrics for train, an export directory,
# and for eval a results.json whose correct count is the prompt length mod 41 (distinct per row below).
mkdir -p "$tmp/bin" "$tmp/out" "$tmp/repo"
cat > "$tmp/bin/uio" <<'STUB'
#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
cmd=$1; shift
arg() { local key=$1; shift; for a in "$@"; do case $a in --$key=*) echo "${a#*=}"; return;; esac; done
        local prev=""; for a in "$@"; do [ "$prev" = "--$key" ] && { echo "$a"; return; }; prev=$a; done; }
case $cmd in
train) d=$(arg out_dir "$@"); mkdir -p "$d"; echo '{"loss":1.0,"step":25,"loss_by_kind":{"retrieval":1.0}}' > "$d/metrics.jsonl" ;;
export) d=$(arg out "$@"); mkdir -p "$d"; echo '{"segment_len":64,"num_memory_tokens":16,"sink_tokens":0}' > "$d/uio_config.json" ;;
eval) d=$(arg out_dir "$@"); n=$(arg retrieval_lengths "$@"); method=$(arg methods "$@"); mkdir -p "$d"
      echo "{\"retrieval\":[{\"method\":\"$method\",\"correct\":$((n % 41)),\"trials\":40,\"status\":\"ok\",\"length\":$n}]}" \
        > "$d/results.json" ;;
esac
STUB
chmod +x "$tmp/bin/uio"
# The script runs in a repository root (out/ is relative); a copy of the script in an empty root keeps the
# test from touching the checkout's out/.
mkdir -p "$tmp/repo/scripts"
cp "$root/scripts/device-recall-grid.sh" "$tmp/repo/scripts/"
run() { (cd "$tmp/repo" && env STUB_LOG="$tmp/log" OUT="$tmp/out" BUILD_DIR="$tmp/bin" "$@" bash scripts/device-recall-grid.sh) \
          > "$tmp/stdout" 2>&1 || { cat "$tmp/stdout"; fail "the script failed"; }; }

# 1. Defaults, a row's own keys, EXTRA over both; prompts follow the documents.
run ROWS="l64-d2-r4 l64-nosink s1024-far" EXTRA="--lr=5e-4" FROM=l64-d2-r4
train_of() { grep "^train .*--out_dir=out/grid-$1 " "$tmp/log" || fail "no train call for $1"; }
train_of l64-d2-r4 | grep -q -- "--sink_tokens=4" || fail "l64-d2-r4 lost the default sink"
train_of l64-nosink | grep -q -- "--sink_tokens=0" || fail "l64-nosink's own key did not replace the default"
for row in l64-d2-r4 l64-nosink s1024-far; do
  train_of $row | grep -q -- "--lr=5e-4" || fail "EXTRA did not reach $row"
  [ "$(train_of $row | grep -o -- '--lr=[^ ]*' | wc -l)" = 1 ] || fail "$row got lr twice"
done
train_of s1024-far | grep -q -- "--seq_len=8192" || fail "s1024-far's seq_len"
train_of s1024-far | grep -q -- "--init_memory=out/grid-l64-d2-r4-export" || fail "s1024-far does not start from FROM"
grep "^eval .*out/grid-eval/s1024-far" "$tmp/log" | grep -q -- "--retrieval_lengths 8192 --retrieval_distance 1024" ||
  fail "s1024-far's evaluation does not ask prompts of its own documents"
grep "^eval .*out/grid-eval/l64-nosink" "$tmp/log" | grep -q -- "--retrieval_lengths 128 --retrieval_distance 64" ||
  fail "l64-nosink's evaluation prompts"
grep -q "^eval .*--methods truncate .*--retrieval_lengths 8192 " "$tmp/log" || fail "no ceiling for 8,192-token prompts"
[ "$(grep -c '^eval .*--methods truncate .*--retrieval_lengths 128 ' "$tmp/log")" = 1 ] ||
  fail "the 128-token ceiling should run once for two rows that ask the same prompts"
tar tzf "$tmp/out/recall-grid.tgz" | grep -q "eval-s1024-far/results.json" || fail "the archive misses a row's results"
tar tzf "$tmp/out/recall-grid.tgz" | grep -q "rows.txt" || fail "the archive misses rows.txt"

# 2. FROM=best: the evaluated row that recalled most (stub: 128-token prompts 5/40, 8,192-token 33/40).
: > "$tmp/log"
run FROM=best FROM_ROWS="l64-d2-r4 s1024-far missing-row" ROWS="s128" BASELINES=0
grep -q "starts from s1024-far" "$tmp/stdout" || { cat "$tmp/stdout"; fail "FROM=best did not pick s1024-far"; }
train_of s128 | grep -q -- "--init_memory=out/grid-s1024-far-export" || fail "s128 does not start from the best row"

# 3. An unknown row is reported, not run.
: > "$tmp/log"
run ROWS="no-such-row" BASELINES=0
grep -q "unknown row no-such-row" "$tmp/stdout" || fail "an unknown row is not reported"
! grep -q "^train" "$tmp/log" || fail "an unknown row trained"
echo "recall-grid script: ok"
