#!/usr/bin/env bash
# Run ON THE GPU MACHINE after the calls that carried .xfer1/ .xfer2/ ... (scripts/split-model-for-device.sh):
# joins the parts in order into models/ and checks size and sha256 through scripts/get-model.sh (which
# would download otherwise). Safe to run again: a model already in place that checks out is kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$root/models"
if PYTHON=false bash "$root/scripts/get-model.sh" >/dev/null 2>&1; then exit 0; fi
[ -f "$root/.xfer1/part" ] || { echo "device-join-model: .xfer1/part is missing: copy the parts over first (scripts/split-model-for-device.sh)"; exit 2; }
: > "$root/models/$name"
for i in $(seq 1 9); do
  [ -f "$root/.xfer$i/part" ] || break
  cat "$root/.xfer$i/part" >> "$root/models/$name"
done
PYTHON=false bash "$root/scripts/get-model.sh" ||
  { echo "device-join-model: the joined file fails its checksum: a part is missing or stale (copy every .xfer<i> over)"; exit 2; }
