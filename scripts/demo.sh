#!/usr/bin/env bash
# The README's first command: sets up (scripts/setup.sh), fetches SmolLM2-135M-Instruct
# (scripts/get-model.sh), builds, and runs uio on it on the CPU: `uio info` with a timed forward pass,
# then `uio generate` answering a chat prompt. Later stages replace this with real memory training.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
model=$(bash "$root/scripts/get-model.sh" | tail -n 1)
bash "$root/scripts/build.sh"
uio=${BUILD_DIR:-$root/build}/uio
"$uio" info --model "$model" --forward_tokens 512
"$uio" generate --model "$model" --chat --max_new_tokens 64 \
  --prompt "In two sentences: why does a long-context language model need memory?"
