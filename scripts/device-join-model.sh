#!/usr/bin/env bash
# Run ON THE GPU MACHINE after the three calls that carried .xfer1/ .xfer2/ .xfer3/: joins the parts into
# models/ and checks size and sha256 through scripts/get-model.sh (which would download otherwise).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p "$root/models"
for i in 1 2 3; do
  [ -f "$root/.xfer$i/part" ] || { echo "device-join-model: .xfer$i/part is missing: carry it in a call first"; exit 2; }
done
cat "$root/.xfer1/part" "$root/.xfer2/part" "$root/.xfer3/part" > "$root/models/$name"
PYTHON=false bash "$root/scripts/get-model.sh"  # checks size + sha256; fails instead of downloading
