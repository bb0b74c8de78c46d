#!/usr/bin/env bash
# The README's first command: installs what uio needs (scripts/setup.sh), fetches SmolLM2-135M-Instruct
# (scripts/get-model.sh) and a small slice of the corpus (Jane Austen's novels and the Debian Reference,
# scripts/get-corpus.sh), builds, tokenises the slice into a token store, and runs the main job on the
# CPU: `uio train --config configs/smollm2-135m-demo.ini` fine-tunes the memory compressor for a few
# minutes and prints held-out perplexity past the first segment before and after training, beside the
# base model truncated to one segment. Outputs go to out/demo/ (metrics.jsonl, the trained compressor).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export UIO_PYTHON="${UIO_PYTHON:-$root/.venv/bin/python}"  # for the helper scripts uio runs (plots, comparisons)
cd "$root"
bash scripts/setup.sh
model=$(bash scripts/get-model.sh | tail -n 1)
SOURCES="austen debian-reference" CORPUS_DIR="$root/out/demo-corpus" bash scripts/get-corpus.sh
bash scripts/build.sh
uio=${BUILD_DIR:-$root/build}/uio
if [ ! -f out/demo-store/index.bin ]; then
  "$uio" prepare --inputs out/demo-corpus --out out/demo-store --tokenizer "$model" --heldout_fraction 0.25
fi
"$uio" train --config configs/smollm2-135m-demo.ini --model "$model" "$@"
