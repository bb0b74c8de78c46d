#!/usr/bin/env bash
# Run HERE before sending SmolLM2 to the GPU machine: one device call carries at most 64 MiB, the GGUF
# is 98 MB. Splits models/<gguf> into three parts in git-ignored .xfer1/ .xfer2/ .xfer3/, one per call
# (docs/gpu.md); scripts/device-join-model.sh puts them back together there and checks the checksum.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=$(bash "$root/scripts/get-model.sh" | tail -n 1)
size=$(stat -c %s "$model")
part=$(( (size + 2) / 3 ))
for i in 1 2 3; do
  rm -rf "$root/.xfer$i" && mkdir -p "$root/.xfer$i"
  dd if="$model" of="$root/.xfer$i/part" bs=1M iflag=skip_bytes,count_bytes skip=$(( (i - 1) * part )) count=$part status=none
done
ls -la "$root"/.xfer*/part
