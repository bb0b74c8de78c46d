#!/usr/bin/env bash
# Run HERE before sending SmolLM2 to the GPU machine: one device call carries at most 64 MiB, the GGUF
# is 98 MB. Splits models/<gguf> into PARTS parts (default 2, about 47 MB each) in git-ignored
# .xfer1/ .xfer2/ ..., one per call (docs/gpu.md); scripts/device-join-model.sh puts them back together
# there and checks the checksum.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
parts=${PARTS:-2}
model=$(bash "$root/scripts/get-model.sh" | tail -n 1)
size=$(stat -c %s "$model")
part=$(( (size + parts - 1) / parts ))
rm -rf "$root"/.xfer[0-9]*  # the model parts only: .xfer-store (a packed token store) stays
for i in $(seq 1 "$parts"); do
  mkdir -p "$root/.xfer$i"
  dd if="$model" of="$root/.xfer$i/part" bs=1M iflag=skip_bytes,count_bytes skip=$(( (i - 1) * part )) count=$part status=none
done
ls -la "$root"/.xfer*/part
